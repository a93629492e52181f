#!/usr/bin/env bash
# Prepare, on a machine WITH network, the wheels that tests/gpu/run-gpu-check.sh installs on a GPU machine
# WITHOUT network: PyHessian and submitit (not on the GPU images) and the small pure-Python dependencies
# of prunebench and its tests. Binary packages (torch, numpy, pandas, scikit-learn, matplotlib) are not
# fetched by default (large, and they must match the GPU image's Python); pass --binary PYVER (e.g. 3.11)
# to add them for that Python on manylinux x86_64.
#
#   tests/gpu/make-wheelhouse.sh [FOLDER] [--binary 3.11]      (default FOLDER: .gpu-wheelhouse, git-ignored)
set -euo pipefail
folder=.gpu-wheelhouse
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    -*) echo "unknown option $1; accepted: [FOLDER] [--binary PYTHON_VERSION]" >&2; exit 2 ;;
    *) folder="$1"; shift ;;
  esac
done
mkdir -p "$folder"
# PyHessian 0.1 is published as a source archive: build it into a wheel (pure Python) without its deps
pip wheel --no-deps --wheel-dir "$folder" pyhessian==0.1
pip download --no-deps --only-binary=:all: --dest "$folder" \
  "submitit>=1.5" cloudpickle typing_extensions tabulate tqdm pytest pluggy iniconfig packaging pygments
if [ -n "$binary" ]; then
  pip download --only-binary=:all: --python-version "$binary" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --dest "$folder" \
    pandas scikit-learn matplotlib pillow
fi
du -sh "$folder"
ls "$folder"
