"""Job folders on disk: where a job lives, its spec.json, its status and its records.

`<results>/jobs/<job id>/` (see `bench.jobs` for what it holds). Everything that reads or writes a
job's folder without running it (executors, status, report, the found-sparsity lookup) goes through
here, so none of them needs the module that runs jobs.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.atomic import read_json, write_json
from bench.spec import JobSpec, RunSettings

JOBS_FOLDER = "jobs"
DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"


def job_dir(results: Path, spec: JobSpec) -> Path:
    return Path(results) / JOBS_FOLDER / spec.job_id


def write_spec(results: Path, spec: JobSpec, run: RunSettings) -> Path:
    """Create the job's folder with its spec.json (kept if it exists); return the spec.json path."""
    folder = job_dir(results, spec)
    path = folder / "spec.json"
    if not path.exists():
        write_json(path, {"job_id": spec.job_id, "spec": asdict(spec), "run": run.to_dict()})
    else:  # the same job on another machine or with another device: refresh only the run settings
        stored = read_json(path)
        if stored["run"] != run.to_dict():
            write_json(path, stored | {"run": run.to_dict()})
    return path


def read_status(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "status.json"
    if not path.exists():
        return {"state": PENDING}
    try:
        return read_json(path)
    except ValueError:
        return {"state": PENDING, "note": "status.json was unreadable"}


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / "metrics.json"
    return read_json(path) if path.exists() else []
