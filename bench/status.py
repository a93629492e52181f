"""`python -m bench.status`: where the jobs of a results folder stand, without trusting sacct.

Counts the jobs by state (done, running, pending, failed, cancelled, lost, interrupted, not
submitted) from the job folders, `jobs.jsonl` and `squeue` (see `bench.tracking`), then lists every job
that is not done with its SLURM id, the queue's reason or the error, its log path and, for failed,
cancelled and lost jobs, the tail of its traceback or log. `--grid NAME [--filter ...]` limits the view
to a grid (and shows its jobs that were never submitted); `--all` lists done jobs too.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from bench.cli import guarded
from bench.errors import BenchError
from bench.grid import load_grid, parse_filters
from bench.store import DONE
from bench.tracking import job_states

STATE_ORDER = ("done", "running", "pending", "failed", "corrupt", "cancelled", "lost", "interrupted", "not submitted",
               "queued")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.status", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results folder (default: results/)")
    parser.add_argument("--grid", help="only the jobs of this grid (name or .toml path), submitted or not")
    parser.add_argument("--filter", action="append", metavar="KEY=VALUE", help="as in bench.run")
    parser.add_argument("--all", action="store_true", help="list done jobs too")
    parser.add_argument("--tail", type=int, default=8, help="traceback/log lines shown per failed job (default 8)")
    return parser


@guarded
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = Path(args.results)
    job_ids = None
    if args.grid:
        job_ids = [job.job_id for job in load_grid(args.grid).plan(parse_filters(args.filter))]
    elif args.filter:
        raise BenchError("--filter needs --grid; accepted: --grid NAME --filter key=value")
    elif not results.exists():
        raise BenchError(f"results folder {results} does not exist; accepted: --results FOLDER of a run")
    states = job_states(results, job_ids)
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state.state] = counts.get(state.state, 0) + 1
    order = [name for name in STATE_ORDER if name in counts] + sorted(set(counts) - set(STATE_ORDER))
    print(f"{len(states)} jobs: " + ", ".join(f"{counts[name]} {name}" for name in order))
    for state in states.values():
        if state.state == DONE and not args.all:
            continue
        slurm = f" [slurm {state.slurm_id}]" if state.slurm_id else ""
        reason = f" {state.reason}" if state.reason else ""
        print(f"{state.state:13s} {state.job_id}{slurm}{reason}")
        if state.state != DONE and state.log:
            print(f"    log: {state.log}")
        if state.traceback and args.tail > 0:
            tail = "\n".join(state.traceback.splitlines()[-args.tail:])
            print(textwrap.indent(tail, "    | "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
