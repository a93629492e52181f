"""Job folders on disk: where a job lives, its spec.json, its status and its records.

`<results>/jobs/<job id>/` (see `bench.jobs` for what it holds). Everything that reads or writes a
job's folder without running it (executors, status, report, the found-sparsity lookup) goes through
here, so none of them needs the module that runs jobs. The job's `lock` (an exclusive flock holding
"pid host" of the process running it, `job_lock`) lives here too, so that trackers can ask who holds
it (`lock_holder`) without importing the runner.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.atomic import CorruptFileError, read_json, write_json
from bench.spec import JobSpec, RunSettings

JOBS_FOLDER = "jobs"
DONE, FAILED, RUNNING, PENDING, CORRUPT = "done", "failed", "running", "pending", "corrupt"
LOCK_FILE = "lock"


def job_dir(results: Path, spec: JobSpec) -> Path:
    return Path(results) / JOBS_FOLDER / spec.job_id


def write_spec(results: Path, spec: JobSpec, run: RunSettings) -> Path:
    """Create the job's folder with its spec.json (kept if it exists); return the spec.json path."""
    folder = job_dir(results, spec)
    path = folder / "spec.json"
    fresh = {"job_id": spec.job_id, "spec": asdict(spec), "run": run.to_dict()}
    try:
        stored = read_json(path) if path.exists() else None
    except CorruptFileError as error:  # the spec is known: write it again
        print(f"warning: {error}; writing it again", flush=True)
        stored = None
    if stored is None:
        write_json(path, fresh)
    elif stored.get("run") != run.to_dict():  # the same job on another machine or device: refresh the run
        write_json(path, stored | {"run": run.to_dict()})
    return path


def read_status(folder: Path) -> dict[str, Any]:
    """The job's status; `corrupt` (with the file named in `error`) when status.json is unreadable or
    says done while metrics.json is missing or unreadable."""
    path = Path(folder) / "status.json"
    if not path.exists():
        return {"state": PENDING}
    try:
        status = read_json(path)
    except CorruptFileError as error:
        return {"state": CORRUPT, "error": str(error)}
    if status.get("state") == DONE:
        metrics = Path(folder) / "metrics.json"
        if not metrics.exists():
            return status | {"state": CORRUPT, "error": f"{metrics} is missing, though status.json says done"}
        try:
            read_json(metrics)
        except CorruptFileError as error:
            return status | {"state": CORRUPT, "error": str(error)}
    return status


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The job's records ([] when there are none); an unreadable file raises `CorruptFileError`."""
    path = Path(folder) / "metrics.json"
    return read_json(path) if path.exists() else []


def lock_holder(folder: Path) -> str | None:
    """"pid host" of the live process holding the job's lock, or None when no process holds it."""
    path = Path(folder) / LOCK_FILE
    if not path.exists():
        return None
    with path.open("r") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


@contextmanager
def job_lock(folder: Path) -> Iterator[str | None]:
    """Hold the job's exclusive lock for the block and yield None, or yield the holder if it is held."""
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            yield handle.read().strip() or "another process"
            return
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield None
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
