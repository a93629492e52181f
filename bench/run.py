"""`python -m bench.run`: expand a grid into jobs, run what is not done, print a summary.

A bare `python -m bench.run` runs the offline `default` grid (digits, ResNet-20, every method, a few
epochs). `--grid NAME` picks another grid; `--dataset/--arch/--methods/--trials/--epochs/--sparsity`
override it. A finished job is skipped on rerun and an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from bench.cli import guarded, resolve_device
from bench.data import DataSettings
from bench.grid import grid_names, load_grid, override, parse_sparsities
from bench.jobs import DONE, job_dir, read_metrics, read_status, run_job, write_spec
from bench.spec import JobSpec, RunSettings


def _list(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(item.strip() for item in text.split(",") if item.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="default", help="grid name (see --list-grids)")
    parser.add_argument("--list-grids", action="store_true", help="list the grids and exit")
    parser.add_argument("--dataset", help="comma-separated datasets, e.g. cifar10@5k,digits")
    parser.add_argument("--arch", help="comma-separated architectures, e.g. resnet20,resnet32")
    parser.add_argument("--methods", help="comma-separated methods")
    parser.add_argument("--trials", type=int, help="number of trials (seeds)")
    parser.add_argument("--epochs", type=int, help="training epochs of one full run (recipe: 160)")
    parser.add_argument("--sparsity", help="comma-separated requested sparsities in [0, 1) or 'found'")
    parser.add_argument("--results", default="results", help="results folder (default: results/)")
    parser.add_argument("--data-root", help="folder holding the dataset's files")
    parser.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    parser.add_argument("--cache-dir", help="uint8 tensor cache folder (default ~/.cache/prunebench)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--retry-failed", action="store_true", help="rerun jobs recorded as failed")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and which are done; run nothing")
    return parser


@guarded
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_grids:
        for name in grid_names():
            print(f"{name:12s} {load_grid(name).description}")
        return 0
    grid = override(load_grid(args.grid), datasets=_list(args.dataset), archs=_list(args.arch),
                    methods=_list(args.methods), trials=args.trials, epochs=args.epochs,
                    sparsities=parse_sparsities(args.sparsity) if args.sparsity else None)
    specs = grid.jobs()
    results = Path(args.results)
    if args.dry_run:
        return _dry_run(specs, results)
    run = RunSettings(device=resolve_device(args.device),
                      data=DataSettings(data_root=args.data_root, download=args.download, cache_dir=args.cache_dir))
    failed = 0
    for index, spec in enumerate(specs, 1):
        print(f"[{index}/{len(specs)}] {spec.job_id}", flush=True)
        status = run_job(write_spec(results, spec, run), retry_failed=args.retry_failed)
        if status["state"] != DONE:
            failed += 1
            print(f"    failed: {status.get('error')}", flush=True)
    print(summary_table(specs, results))
    return 1 if failed else 0


def _dry_run(specs: list[JobSpec], results: Path) -> int:
    done = 0
    for spec in specs:
        state = read_status(job_dir(results, spec))["state"]
        done += state == DONE
        print(f"{state:8s} {spec.job_id}")
    print(f"{len(specs)} jobs, {done} done")
    return 0


def summary_table(specs: list[JobSpec], results: Path) -> str:
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
                "round": record["round"] if record else "",
                "sparsity": f"{record['achieved_sparsity']:.3f}" if record else "",
                "accuracy": f"{record['accuracy']:.4f}" if record else "",
                "epochs": record["epochs"] if record else "",
                "runtime (s)": f"{record['runtime_s']:.1f}" if record else "",
                "state": status["state"],
            })
    return tabulate(rows, headers="keys", tablefmt="github")


if __name__ == "__main__":
    sys.exit(main())
