"""Job folders on disk: where a job lives, its spec.json, its status and its records.

`<results>/jobs/<job id>/` (see `bench.jobs` for what it holds). Everything that reads or writes a
job's folder without running it (executors, status, report, the found-sparsity lookup) goes through
here, so none of them needs the module that runs jobs. The job's `lock` (an exclusive flock holding
"pid host" of the process running it, `job_lock`) lives here too, so that trackers can ask who holds
it (`lock_holder`) without importing the runner.

Nothing here follows a link out of the results folder (`bench.safe_paths`): `job_folder_refusal` names
a job folder (or `jobs/`) that leads elsewhere, the lock is opened with `O_NOFOLLOW`, and files are
read without following links. A `spec.json` that holds another job's spec is set aside as
`spec.json.corrupt`, and a `metrics.json` that is not a list of records makes the job `corrupt`.
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

from bench.atomic import CorruptFileError, file_mode, read_json, write_json
from bench.errors import BenchError
from bench.safe_paths import LinkOutError, check_inside, open_no_follow
from bench.spec import JobSpec, RunSettings

JOBS_FOLDER = "jobs"
DONE, FAILED, RUNNING, PENDING, CORRUPT = "done", "failed", "running", "pending", "corrupt"
LOCK_FILE = "lock"
RECORD_KEYS = ("method", "round", "achieved_sparsity", "accuracy")
"""What every record of a metrics.json holds at least (the tables and the run summary read them)."""


def job_dir(results: Path, spec: JobSpec) -> Path:
    return Path(results) / JOBS_FOLDER / spec.job_id


def job_folder_refusal(folder: str | os.PathLike) -> str | None:
    """Why the job folder `<results>/jobs/<id>` must not be used (it, or `jobs/`, is a link leading out
    of the results folder, or `jobs/` is a file), or None. (Strings, not pathlib: a report or status
    asks this of every one of thousands of folders.)"""
    folder = os.fspath(folder)
    jobs = os.path.dirname(folder)
    if os.path.islink(jobs) or os.path.islink(folder):  # else `<results>/jobs/<id>` cannot lead out of `<results>`
        try:
            check_inside(folder, os.path.dirname(jobs))
        except LinkOutError as error:
            return str(error)
    if os.path.exists(jobs) and not os.path.isdir(jobs):
        return f"{jobs} is a file; accepted: a folder of job folders (move the file away)"
    return None


def listed_job_folders(results: str | os.PathLike) -> dict[str, bool]:
    """The job folders under `<results>/jobs` (folders and links to folders, as `Path.is_dir` lists them),
    each with whether it may be read without asking `job_folder_refusal` (`read_job(checked=True)`): a
    plain folder, not a link, in a `jobs/` that is not a link. One directory read and no stat per folder
    (the entries' types come with it): a status of thousands of jobs asks this once."""
    jobs = os.path.join(os.fspath(results), JOBS_FOLDER)
    try:
        entries = list(os.scandir(jobs))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    plain_root = not os.path.islink(jobs)
    return {entry.name: plain_root and not entry.is_symlink() for entry in entries if entry.is_dir()}


def write_spec(results: Path, spec: JobSpec, run: RunSettings) -> Path:
    """Create the job's folder with its spec.json (kept if it exists); return the spec.json path.

    Nothing is written into a folder that `job_folder_refusal` refuses (`run_job` then fails the job)."""
    folder = job_dir(results, spec)
    path = folder / "spec.json"
    if job_folder_refusal(folder) is not None:
        return path
    fresh = {"job_id": spec.job_id, "spec": asdict(spec), "run": run.to_dict()}
    try:
        stored = read_json(path) if path.exists() else None
        if stored is not None and stored_job_id(stored) != spec.job_id:
            path.replace(path.with_name(path.name + ".corrupt"))
            raise CorruptFileError(f"{path} holds the spec of another job ({stored_job_id(stored)}); set aside as "
                                   f"{path.name}.corrupt")
    except CorruptFileError as error:  # the spec is known: write it again
        print(f"warning: {error}; writing it again", flush=True)
        stored = None
    try:
        if stored is None:
            write_json(path, fresh)
        elif stored.get("run") != run.to_dict():  # the same job on another machine or device: refresh the run
            write_json(path, stored | {"run": run.to_dict()})
    except OSError:  # a folder that cannot be written (read-only, immutable): `run_job` fails this job alone
        pass
    return path


def stored_job_id(stored: Any) -> str | None:
    """The id of the spec a spec.json holds (hashed again, not the id it claims), or None if it holds none."""
    try:
        return JobSpec.from_dict(stored["spec"]).job_id
    except (KeyError, TypeError, ValueError, BenchError):
        return None


def read_status(folder: Path) -> dict[str, Any]:
    """The job's status; `corrupt` (with the file named in `error`) when status.json is unreadable or
    says done while metrics.json is missing or unreadable, or the folder leads out through a link."""
    return read_job(folder)[0]


def read_job(folder: str | os.PathLike, checked: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The job's status (`read_status`) and, when it is done, its records: each file read once.
    `checked`: the caller has found no `job_folder_refusal` for the folder (it is not asked again)."""
    refusal = None if checked else job_folder_refusal(folder)  # nothing is read through a link out of results
    if refusal is not None:
        return {"state": CORRUPT, "error": refusal}, []
    path = os.path.join(folder, "status.json")
    try:
        status = read_json(path)
        if not isinstance(status, dict) or not isinstance(status.get("state"), str):
            raise CorruptFileError(f"{path} holds no job state (wrong shape); delete it (the job runs again)")
    except FileNotFoundError:
        return {"state": PENDING}, []
    except CorruptFileError as error:
        return {"state": CORRUPT, "error": str(error)}, []
    if status["state"] != DONE:
        return status, []
    metrics = os.path.join(folder, "metrics.json")
    try:
        return status, _records(metrics)
    except FileNotFoundError:
        return status | {"state": CORRUPT, "error": f"{metrics} is missing, though status.json says done"}, []
    except CorruptFileError as error:
        return status | {"state": CORRUPT, "error": str(error)}, []


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The job's records ([] when there are none); an unreadable file, or one that is not a list of
    records (`RECORD_KEYS`), raises `CorruptFileError` naming it."""
    try:
        return _records(Path(folder) / "metrics.json")
    except FileNotFoundError:
        return []


def _records(path: str | os.PathLike) -> list[dict[str, Any]]:
    records = read_json(path)
    if not isinstance(records, list) or not all(isinstance(record, dict) and all(key in record for key in RECORD_KEYS)
                                                for record in records):
        raise CorruptFileError(f"{path} has the wrong shape (accepted: a list of records with "
                               f"{', '.join(RECORD_KEYS)}); the job runs again")
    return records


def lock_holder(folder: Path) -> str | None:
    """"pid host" of the live process holding the job's lock, or None when no process holds it."""
    path = Path(folder) / LOCK_FILE
    if not path.exists():
        return None
    try:
        descriptor = open_no_follow(path, os.O_RDONLY)
    except LinkOutError:
        return None
    with os.fdopen(descriptor, "r") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


@contextmanager
def job_lock(folder: Path) -> Iterator[str | None]:
    """Hold the job's exclusive lock for the block and yield None, or yield the holder if it is held.

    The lock is opened without following a link (`LinkOutError`), and emptied only once it is held."""
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_no_follow(path, os.O_RDWR | os.O_CREAT, file_mode()), "r+") as handle:
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


def wait_for_job(folder: Path) -> dict[str, Any]:
    """Block until no process holds the job's lock (its holder finished or died); return its status."""
    path = Path(folder) / LOCK_FILE
    if path.exists():
        with os.fdopen(open_no_follow(path, os.O_RDONLY), "r") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return read_status(folder)
