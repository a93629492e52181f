#!/usr/bin/env bash
# The GPU check (issue 19, part 5): on a machine with one CUDA GPU and no network, in under 8 minutes,
#   1. install what the image lacks from a carried wheelhouse (tests/gpu/make-wheelhouse.sh makes it),
#   2. run every CUDA test (tests/gpu, marker `cuda`),
#   3. python -m bench.perf --device cuda: an epoch, packing 1/2/4/8 jobs per GPU, the harness against the
#      bare loop, each in fp32 and bf16,
#   4. a tiny grid end to end on CUDA (local pool, 2 jobs per GPU), its report and its dry run's device-hours,
# and leave everything in one folder: $OUT if set, else gpu-check-<UTC time>/.
#
#   tests/gpu/run-gpu-check.sh [WHEELHOUSE]     (from the repository root; default WHEELHOUSE: .gpu-wheelhouse)
#
# Each step has its own time limit (together under 8 minutes with a few packages to install) and its exit status is written to summary.txt; the script goes on after a
# failed step and exits non-zero if any failed.
set -u
cd "$(dirname "$0")/../.."
wheels="${1:-.gpu-wheelhouse}"
out="${OUT:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
summary="$out/summary.txt"
: > "$summary"
failed=0
export PRUNEBENCH_CACHE="$out/cache" PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run, log to NAME.log, record the exit status and seconds
  local name="$1" limit="$2"
  shift 2
  local started=$SECONDS
  echo "== $name: $*" | tee -a "$out/$name.log"
  timeout --kill-after=10 "$limit" "$@" >> "$out/$name.log" 2>&1
  local status=$?
  echo "$name: exit $status in $((SECONDS - started)) s (limit $limit s)" | tee -a "$summary"
  [ "$status" -eq 0 ] || failed=1
  tail -n 25 "$out/$name.log"
}

{
  date -u +%FT%TZ
  hostname
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "nvidia-smi: not available"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  git rev-parse HEAD 2>/dev/null || echo "not a git checkout"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

# 1. what the image lacks, from the wheelhouse (no index: there is no network)
missing=$(python - <<'EOF'
import importlib.util
modules = {"pyhessian": "pyhessian", "submitit": "submitit", "tabulate": "tabulate", "tqdm": "tqdm",
           "pytest": "pytest", "pandas": "pandas", "sklearn": "scikit-learn", "matplotlib": "matplotlib",
           "PIL": "pillow", "torchvision": "torchvision", "numpy": "numpy"}
print(" ".join(package for module, package in modules.items() if importlib.util.find_spec(module) is None))
EOF
)
for package in $missing; do  # one at a time: a package missing from the wheelhouse does not stop the others
  if [ -d "$wheels" ]; then
    step "install-$package" 30 pip install --no-index --find-links "$wheels" "$package"
  else
    echo "install-$package: missing, and there is no wheelhouse at $wheels (tests/gpu/make-wheelhouse.sh)" \
      | tee -a "$summary"
    failed=1
  fi
done
[ -n "$missing" ] || echo "install: nothing missing" | tee -a "$summary"

# 2. the CUDA tests (they skip, saying why, where torch sees no GPU)
step cuda-tests 120 python -m pytest -q -rs -m cuda tests/gpu --junitxml="$out/cuda-tests.xml" -p no:cacheprovider

# 3. throughput: an epoch (old and new settings), packing 1/2/4/8, fp32 and bf16; then the overhead
step perf-epoch-packing 150 python -m bench.perf --device cuda --measure epoch,packing --precision fp32,bf16 \
  --job-epochs 5 --packing 1,2,4,8 --packing-epochs 2 --perf-file "$out/perf.json"
step perf-overhead 40 python -m bench.perf --device cuda --measure overhead --precision fp32,bf16 \
  --steps 20 --repeats 5

# 4. a tiny grid end to end on CUDA: two jobs per GPU in the local pool, then its report and device-hours
grid=(--dataset digits --arch resnet8 --methods dense,magnitude,snip --sparsity 0.5 --epochs 3 --device cuda
      --results "$out/grid")
step grid 60 python -m bench.run "${grid[@]}" --executor local --jobs-per-gpu 2
step grid-report 40 python -m bench.report --results "$out/grid" --out "$out/report"
step grid-dry-run 40 python -m bench.run "${grid[@]}" --dry-run --perf-file "$out/perf.json"

echo "results in $out (summary.txt, *.log, perf.json, cuda-tests.xml, grid/)"
cat "$summary"
exit "$failed"
