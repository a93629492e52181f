"""`python -m bench.run`: expand a grid into jobs, run or submit what is not done, print a summary.

A bare `python -m bench.run` runs the offline `default` grid (digits, ResNet-20, every method, a few
epochs) inline. `--grid NAME` (or a path to a .toml file) picks another grid, `--list-grids` lists them;
`--dataset/--arch/--methods/--trials/--epochs/--sparsity` override it (a run naming methods, a dataset or
a sparsity gets each method's full default settings; `--quick` asks for their cheap `quick_hparams`,
which the bare default run uses and says so in its first line) and `--filter key=value` selects
part of it; `--set key=value` sets any setting (`--describe NAME` lists them). `--executor inline|local|slurm` (see `bench.executor_registry`): inline and local run to the end
and print the summary (one row per job, its non-default settings shown); slurm submits array jobs and
returns (watch with `python -m bench.status`).
A finished job is skipped on rerun, an interrupted one resumes from its checkpoint, and a failed one
is retried only with `--retry-failed`. The plan run (grid, overrides, job ids) is added to
`<results>/plan.json`, which `bench.report --results DIR` reports by default. One line is printed per
finished job (accuracy, time, jobs left, ETA); off a terminal, a line every `--log-every` epochs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from bench import preflight
from bench.cli import guarded, resolve_device
from bench.cost import format_cost, grid_cost
from bench.cpu_support import bf16_support
from bench.data import DataSettings
from bench.epoch_logs import LOGGERS, check_loggers
from bench.errors import BenchError
from bench.executor_registry import EXECUTORS, Executor, ExecutorOptions, executor_flags
from bench.grid import Grid, PlannedJob, grid_names, load_grid, override, parse_filters, parse_sparsities
from bench.method_identity import superseded_lines
from bench.plans import record_plan
from bench.settings_cli import apply_assignments, describe, grid_methods, parse_assignments
from bench.slurm.executor import SlurmSettings
from bench.spec import JobSpec, RunSettings
from bench.store import DONE, PENDING, job_dir, read_metrics, read_status
from bench.threads import threads_per_job
from bench.throughput import perf_path, read_throughputs
from bench.tracking import NEW, job_states


def _list(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(item.strip() for item in text.split(",") if item.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="default", help="grid name (see --list-grids)")
    parser.add_argument("--list-grids", action="store_true", help="list the grids and exit")
    parser.add_argument("--quick", action="store_true",
                        help="each method's cheap quick_hparams instead of its defaults (smoke runs; the bare "
                             "offline default run is quick, a run naming --methods/--dataset/--sparsity is not)")
    parser.add_argument("--dataset", help="comma-separated datasets, e.g. cifar10@5k,digits")
    parser.add_argument("--arch", help="comma-separated architectures, e.g. resnet20,resnet32")
    parser.add_argument("--methods", help="comma-separated methods")
    parser.add_argument("--trials", type=int, help="number of trials (seeds)")
    parser.add_argument("--epochs", type=int, help="training epochs of one full run (recipe: 160)")
    parser.add_argument("--sparsity", help="comma-separated requested sparsities in [0, 1), 'found' (IMC's s*), "
                        "'paper' (the s* the paper reports for the dataset and arch) or 'sweep'")
    parser.add_argument("--image-size", type=int, help="side length images are resized to (imagefolder, imagenet-sub)")
    parser.add_argument("--ablation", help="comma-separated sanity ablations: none, shuffle, reinit, invert")
    parser.add_argument("--results", default="results", help="results folder (default: results/)")
    parser.add_argument("--data-root", help="folder holding the dataset's files")
    parser.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    parser.add_argument("--cache-dir", help="uint8 tensor cache folder (default ~/.cache/prunebench)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--retry-failed", action="store_true", help="rerun jobs recorded as failed")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the jobs and which are done, then what the grid costs; run nothing")
    parser.add_argument("--perf-file", help="throughput measured by python -m bench.perf, for --dry-run's "
                        "device-hours (default: perf.json in the cache folder)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", dest="settings",
                        help="set a setting of every job: train.<field>, hparams.<setting> (every method having it) "
                             "or hparams.<method>.<setting>; repeatable; see --describe")
    parser.add_argument("--describe", metavar="NAME",
                        help="print the settings of a method, of 'train' or of a dataset (defaults, help) and exit")
    parser.add_argument("--log-every", type=int, default=RunSettings.log_every, metavar="N",
                        help=f"when stderr is not a terminal (SLURM logs): a line every N epochs (default "
                             f"{RunSettings.log_every}; 0: none)")
    parser.add_argument("--log", action="append", default=[], choices=LOGGERS,
                        help="also log every job's epochs to: tensorboard (<job>/tensorboard/; the extra "
                             "prunebench[tensorboard])")
    parser.add_argument("--filter", action="append", metavar="KEY=VALUE",
                        help="select jobs: method, dataset, arch, trial, sparsity, train.<field>, hparams.<setting>; "
                             "comma-separated values are alternatives; repeat to combine (jobs they wait for are kept)")
    parser.add_argument("--executor", default="inline", choices=EXECUTORS.names(),
                        help="inline: this process; local: a pool of worker processes; slurm: submit and return")
    parser.add_argument("--workers", type=int, help="local pool size (default: one per GPU, else half the CPUs)")
    parser.add_argument("--threads-per-job", type=int, metavar="N",
                        help="CPU threads of each job (inline: this process; local: each worker; default: "
                             "OMP_NUM_THREADS, else the cores divided by the workers; slurm: use --cpus-per-job)")
    parser.add_argument("--jobs-per-gpu", type=int, default=1,
                        help="jobs sharing one GPU at once (local: workers per GPU; slurm: jobs per array task)")
    slurm = parser.add_argument_group("slurm executor")
    defaults = SlurmSettings()
    slurm.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    slurm.add_argument("--gpus-per-job", type=int, default=defaults.gpus_per_job, help="GPUs per job (default 0)")
    slurm.add_argument("--cpus-per-job", type=int, default=defaults.cpus_per_job,
                       help=f"CPUs per job (default {defaults.cpus_per_job})")
    slurm.add_argument("--mem-gb", type=float, default=defaults.mem_gb, help=f"memory per job (default {defaults.mem_gb:g})")
    slurm.add_argument("--time-min", type=int, default=defaults.time_min,
                       help=f"time limit per job in minutes; a job past it requeues from its checkpoint "
                            f"(default {defaults.time_min})")
    slurm.add_argument("--array-parallelism", type=int, default=defaults.array_parallelism,
                       help=f"most tasks of one array running at once (default {defaults.array_parallelism})")
    slurm.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before the job, e.g. 'module load cuda' (repeatable)")
    slurm.add_argument("--constraint", help="SLURM --constraint, e.g. a GPU type, so runtimes compare")
    slurm.add_argument("--max-num-timeout", type=int, default=defaults.max_num_timeout,
                       help=f"requeues after a timeout before a job fails (default {defaults.max_num_timeout})")
    slurm.add_argument("--max-array-size", type=int, help="largest array submitted (default: the cluster's MaxArraySize)")
    slurm.add_argument("--cuda-mps", action="store_true",
                       help="start the CUDA MPS daemon inside each allocation (with --jobs-per-gpu > 1)")
    return parser


@guarded
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_grids:
        for name in grid_names():
            print(f"{name:12s} {load_grid(name).description}")
        return 0
    if args.describe:
        print(describe(args.describe))
        return 0
    device = _device(args)
    check_executor_flags(args)
    grid = override(load_grid(args.grid), datasets=_list(args.dataset), archs=_list(args.arch),
                    methods=_list(args.methods), trials=args.trials, epochs=args.epochs,
                    sparsities=parse_sparsities(args.sparsity) if args.sparsity else None,
                    ablations=_list(args.ablation), image_size=args.image_size, quick=_quick(args))
    if any(part.quick for part in grid.parts):
        print(quick_note(grid), flush=True)
    grid = apply_assignments(grid, parse_assignments(args.settings, grid_methods(grid)))
    preflight.check_grid(grid)
    expanded = grid.jobs()
    for line in grid.levels_not_planned(expanded):
        print(f"note: {line}", flush=True)
    planned = grid.plan(parse_filters(args.filter), expanded)
    if not planned:
        raise BenchError(f"no job of grid {grid.name!r} matches the filters {args.filter}")
    results = Path(args.results)
    for line in superseded_lines(planned, results):
        print(line)
    data = DataSettings(data_root=args.data_root, download=args.download, cache_dir=args.cache_dir)
    executor = EXECUTORS.get(args.executor)()
    executor.check_packing(device, args.jobs_per_gpu)
    _say_if_bf16_is_slow(planned, device)
    for note in preflight.check_jobs(planned):
        print(f"note: {note}", flush=True)
    if args.dry_run:
        listed = _dry_run(planned, results)
        path = perf_path(args.perf_file, data)
        print(format_cost(grid_cost(planned, results, data), read_throughputs(path), path))
        return listed
    if args.workers is not None and args.workers < 1:
        raise BenchError(f"--workers {args.workers}; accepted: an integer >= 1")
    if args.log_every < 0:
        raise BenchError(f"--log-every {args.log_every}; accepted: an integer >= 0 (0: no epoch lines)")
    check_loggers(tuple(args.log))
    options = executor_options(args, grid.name)
    executor.check_options(options)
    if args.threads_per_job is not None:
        threads_per_job(1, args.threads_per_job)  # the one-line error for a bad value, before any work
    run = RunSettings(device=device, data=data, log_every=args.log_every, log=tuple(dict.fromkeys(args.log)))
    preflight.check_run(planned, results, run, executor.runs_here)
    record_plan(results, args.grid, plan_overrides(args), planned, quick=any(part.quick for part in grid.parts))
    outcome = executor.submit(planned, results, run, options)
    if executor.runs_to_the_end:
        print(summary_table([job.spec for job in planned], results))
    return executor.exit_status(outcome)


def _quick(args: argparse.Namespace) -> bool | None:
    """`--quick`: each method's cheap settings; a run that names methods, a dataset or a sparsity gets
    the full defaults; otherwise (None) the grid says (the offline default grid is quick)."""
    if args.quick:
        return True
    return False if any(value is not None for value in (args.methods, args.dataset, args.sparsity)) else None


def quick_note(grid: Grid) -> str:
    """The first line of a quick run: which cheap settings replace the methods' defaults."""
    from methods.registry import get_method

    cheap = "; ".join(f"{name}: {', '.join(f'{key}={value}' for key, value in get_method(name).quick_hparams.items())}"
                      for name in grid_methods(grid) if get_method(name).quick_hparams)
    return (f"quick settings: grid {grid.name!r} runs each method's cheap quick_hparams, not its defaults ({cheap}); "
            "name --methods, --dataset or --sparsity (without --quick) for the full defaults")


def executor_options(args: argparse.Namespace, grid_name: str) -> ExecutorOptions:
    """What the command line gives the executor besides the plan."""
    slurm = SlurmSettings(
        partition=args.partition, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
        mem_gb=args.mem_gb, time_min=args.time_min, array_parallelism=args.array_parallelism,
        setup=tuple(args.slurm_setup), constraint=args.constraint, max_num_timeout=args.max_num_timeout,
        max_array_size=args.max_array_size, job_name=f"prunebench-{grid_name}", jobs_per_gpu=args.jobs_per_gpu,
        cuda_mps=args.cuda_mps)
    return ExecutorOptions(retry_failed=args.retry_failed, workers=args.workers, threads_per_job=args.threads_per_job,
                           jobs_per_gpu=args.jobs_per_gpu, slurm=slurm)


def check_executor_flags(args: argparse.Namespace) -> None:
    """Refuse flags that the chosen executor would ignore: those it refuses by name (`--workers` inline or
    slurm), and another executor's own flags changed from their defaults (SLURM flags with local or inline)."""
    executor: type[Executor] = EXECUTORS.get(args.executor)
    for flag, line in executor.refused.items():
        if getattr(args, flag) is not None:
            raise BenchError(line)
    defaults = build_parser().parse_args([])
    others = {flag: owner for flag, owner in executor_flags().items() if owner != args.executor
              and getattr(args, flag) != getattr(defaults, flag)}
    if others:
        owner = next(iter(others.values()))
        given = [f"--{flag.replace('_', '-')}" for flag, named in others.items() if named == owner]
        raise BenchError(f"{', '.join(given)} only apply to --executor {owner}, not {args.executor}; accepted: "
                         f"--executor {owner}, or leave them out")


PLAN_FLAGS = ("dataset", "arch", "methods", "trials", "epochs", "sparsity", "image_size", "ablation", "settings",
              "filter")


def plan_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The command-line changes to the grid, by flag, as `<results>/plan.json` records them."""
    flags = {"settings": "--set"}
    return {flags.get(name, f"--{name.replace('_', '-')}"): getattr(args, name) for name in PLAN_FLAGS
            if getattr(args, name, None) is not None}


def _device(args: argparse.Namespace) -> str:
    """The training device. Jobs that run elsewhere (SLURM): the name is checked, not this machine's GPUs."""
    if EXECUTORS.get(args.executor).runs_here:
        return resolve_device(args.device)
    if args.device == "auto":
        return "cuda" if args.gpus_per_job else "cpu"
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        resolve_device(args.device)  # raises the one-line error naming the accepted devices
    return args.device


def _say_if_bf16_is_slow(planned: list[PlannedJob], device: str) -> None:
    """One line before bf16 jobs run on a CPU without fast bf16 (they train several times slower than fp32)."""
    from bench.jobs import train_settings_for

    if device != "cpu" or all(train_settings_for(job.spec).precision != "bf16" for job in planned):
        return
    support = bf16_support()
    if support.fast is not True:
        print(f"note: {support.advice()}")


def _dry_run(planned: list[PlannedJob], results: Path) -> int:
    states = job_states(results, [job.job_id for job in planned])
    counts: dict[str, int] = {}
    for job in planned:
        state = states[job.job_id].state
        state = PENDING if state == NEW else state
        counts[state] = counts.get(state, 0) + 1
        after = f"  (after {', '.join(job.after)})" if job.after else ""
        print(f"{state:8s} {job.job_id}{after}")
    others = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()) if state != DONE)
    if others:
        print(f"not done: {others}")
    print(f"{len(planned)} jobs, {counts.get(DONE, 0)} done")
    return 0


def summary_table(specs: list[JobSpec], results: Path) -> str:
    """One row per record, in the progress lines' units: accuracy in %, small sparsities as 7.4e-06."""
    from bench.tables import number  # as bench.progress: the report's pandas only once a run has finished

    rows = []
    for spec in specs:
        folder = job_dir(results, spec)
        status = read_status(folder)
        records = read_metrics(folder) if status["state"] == DONE else []
        for record in records or [None]:
            rows.append({
                "method": spec.method,
                "dataset": spec.dataset,
                "arch": spec.arch,
                "trial": spec.trial,
                "ablation": spec.ablation,
                "settings": ", ".join(f"{key}={value}" for key, value in sorted(spec.hparams.items())) or "defaults",
                "round": record["round"] if record else "",
                "sparsity": number(record["achieved_sparsity"], 3) if record else "",
                "accuracy (%)": f"{100 * record['accuracy']:.2f}" if record else "",
                "epochs": record["epochs"] if record else "",
                "runtime (s)": f"{record['runtime_s']:.1f}" if record else "",
                "state": status["state"],
            })
    return tabulate(rows, headers="keys", tablefmt="github")


if __name__ == "__main__":
    sys.exit(main())
