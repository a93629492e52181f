"""How the report and the status scale with the number of job folders (`python -m bench.perf --measure report`).

Copies the job folders of a finished results folder (by default one the benchmark runs itself: the bare
default grid, 23 jobs on digits) over as many trials as it takes to make `folders` job folders: each copy
gets its trial number and a job id of its own in `spec.json` and `metrics.json`, everything else stays
as written. Then it times, each in a fresh process, `python -m bench.report --all-jobs` and
`python -m bench.status`, with the child's peak memory (ru_maxrss), at `folders` and at half as many,
so that the cost per folder shows whether it grows linearly. The issue's targets at 10,000 folders on
the 2-core VM: report <= 10 s, status <= 2 s, memory <= 500 MB.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.errors import BenchError
from bench.spec import JobSpec
from bench.store import JOBS_FOLDER

TARGETS = {"report": "<= 10 s, <= 500 MB", "status": "<= 2 s, <= 500 MB"}
"""The issue's targets at 10,000 folders on the project's 2-core VM."""
COPIED = ("spec.json", "status.json", "metrics.json", "epochs.csv", "layers.csv", "provenance.json")


def make_folders(source: Path, target: Path, folders: int) -> int:
    """Fill `target/jobs` with `folders` job folders copied from `source/jobs` over new trials; return the count."""
    originals = sorted(path for path in (Path(source) / JOBS_FOLDER).iterdir() if (path / "metrics.json").exists())
    if not originals:
        raise BenchError(f"no finished job under {source}/{JOBS_FOLDER} to copy")
    jobs_root = Path(target) / JOBS_FOLDER
    jobs_root.mkdir(parents=True, exist_ok=True)
    made, trial = 0, 0
    while made < folders:
        for original in originals:
            if made == folders:
                break
            entry = json.loads((original / "spec.json").read_text())
            spec = JobSpec.from_dict(entry["spec"] | {"trial": entry["spec"]["trial"] + 1000 * (trial + 1)})
            folder = jobs_root / spec.job_id
            folder.mkdir(exist_ok=True)
            for name in COPIED:
                if (original / name).exists():
                    shutil.copyfile(original / name, folder / name)
            (folder / "spec.json").write_text(json.dumps(entry | {"job_id": spec.job_id, "spec": spec.__dict__}))
            records = json.loads((original / "metrics.json").read_text())
            for record in records:
                record |= {"job_id": spec.job_id, "trial": spec.trial}
            (folder / "metrics.json").write_text(json.dumps(records))
            made += 1
        trial += 1
    return made


LAUNCHER = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
"""Runs the timed command from a small fresh interpreter: a child forked straight from this process (which
has imported torch) would count this process's memory as its own peak until it execs."""


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of `command` run to completion in a fresh process."""
    started = time.perf_counter()
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if launched.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed (exit {launched.returncode}): "
                         f"{launched.stderr.strip().splitlines()[-1:] or ''}")
    return seconds, int(launched.stdout.split()[-1]) / 1024


def measure(folders: int, work: Path, source: Path | None = None) -> list[dict]:
    """Rows (folders, command, seconds, seconds per 1k folders, peak MB) at `folders` and at half as many."""
    if source is None:
        source = work / "default-run"
        if not (source / JOBS_FOLDER).is_dir():
            subprocess.run([sys.executable, "-m", "bench.run", "--results", str(source)], check=True,
                           stdout=subprocess.DEVNULL)
    rows = []
    for count in (folders // 2, folders):
        results = work / f"folders-{count}"
        if not (results / JOBS_FOLDER).is_dir() or sum(1 for _ in (results / JOBS_FOLDER).iterdir()) != count:
            shutil.rmtree(results, ignore_errors=True)
            make_folders(source, results, count)
        for name, command in (("report", ["-m", "bench.report", "--all-jobs", "--out", str(results / "report")]),
                              ("status", ["-m", "bench.status"])):
            seconds, megabytes = timed([sys.executable, *command, "--results", str(results)])
            rows.append({"folders": count, "command": name, "seconds": seconds,
                         "seconds_per_1k": 1000 * seconds / count, "peak_mb": megabytes})
    return rows
