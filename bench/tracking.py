"""Where each job of a results folder stands, read from disk and the SLURM queue, never from sacct.

`<results>/jobs.jsonl` maps a job id to its SLURM id, its job folder and its log (one line per
submission, the last one counts); `status.json` in the job folder says done / failed / running as the
job itself wrote it; `squeue` (when present; `bench.slurm.queue`) says whether a SLURM id is still queued or running. A job
that left the queue without writing `done` or `failed` was cancelled, killed (memory, node failure) or
timed out without a requeue: it is reported as `cancelled` or `lost` with its log, and a rerun submits
it again. This follows the submitit notes of `shared/specs/harness-anchors.md` (d): `job.state` calls
sacct, which many clusters lack (submitit #1720), and Hydra's launcher reports failed jobs as
COMPLETED (hydra #1928), so the job folders are the source of truth.

A job that says `running` is `running` while a live process holds its lock (`bench.store.job_lock`,
named in the reason) and `interrupted` when none does; a `done` job whose metrics.json is missing or
unreadable is `corrupt`, with the file named. A pending job's queue reason is given in words a user
can act on. A torn line of `jobs.jsonl` is skipped with a warning naming the file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.atomic import file_mode
from bench.safe_paths import open_no_follow
from bench.slurm.queue import ACTIVE_QUEUE_STATES, WAITING_QUEUE_STATES, queue_reason, squeue_states
from bench.store import (
    CORRUPT,
    DONE,
    FAILED,
    JOBS_FOLDER,
    PENDING,
    RUNNING,
    listed_job_folders,
    lock_holder,
    read_job,
)

JOBS_LOG = "jobs.jsonl"
QUEUED, CANCELLED, LOST, NEW, INTERRUPTED = "queued", "cancelled", "lost", "not submitted", "interrupted"
LOG_TAIL_LINES = 12


@dataclass
class JobState:
    """What `bench.status` shows for one job."""

    job_id: str
    state: str  # done | failed | running | pending (queued) | cancelled | lost | interrupted | not submitted
    slurm_id: str | None = None
    reason: str = ""  # the queue's reason for a pending job, or the error of a failed one
    log: str | None = None
    traceback: str = ""
    setup_failure: bool = False  # failed loading data or reaching the device: rerun without --retry-failed

    @property
    def needs_submission(self) -> bool:
        """True for a job that is neither finished, failed (for a reason a rerun does not fix), nor queued."""
        return self.state in (NEW, CANCELLED, LOST, INTERRUPTED, CORRUPT) or (self.state == FAILED and self.setup_failure)


def jobs_log_path(results: Path) -> Path:
    return Path(results) / JOBS_LOG


def append_jobs_log(results: Path, entries: Iterable[dict[str, Any]]) -> None:
    """Append submission records to `jobs.jsonl` (one JSON object a line, flushed)."""
    path = jobs_log_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, file_mode()), "a") as handle:
        for entry in entries:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
        handle.flush()


def read_jobs_log(results: Path) -> dict[str, dict[str, Any]]:
    """The last submission record of each job id."""
    path = jobs_log_path(results)
    latest: dict[str, dict[str, Any]] = {}
    if path.exists():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                latest[entry["job_id"]] = entry
            except (ValueError, KeyError, TypeError):
                print(f"warning: {path} line {number} is not a submission record; skipped", file=sys.stderr)
    return latest


def log_tail(path: str | None, lines: int = LOG_TAIL_LINES) -> str:
    if not path or not Path(path).exists():
        return ""
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def job_states(results: Path, job_ids: Iterable[str] | None = None,
               queue: dict[str, tuple[str, str]] | None = None) -> dict[str, JobState]:
    """The state of each job id (default: every job folder and every submitted job of `results`)."""
    results = Path(results)
    submitted = read_jobs_log(results)
    folders = listed_job_folders(results)  # which folders need no link check (one directory read)
    if job_ids is None:
        job_ids = sorted(set(folders) | set(submitted))
    if queue is None and submitted:
        queue = squeue_states()
    jobs = os.path.join(results, JOBS_FOLDER)
    return {job_id: _state(os.path.join(jobs, job_id), job_id, submitted.get(job_id), queue, folders.get(job_id, False))
            for job_id in job_ids}


def _state(folder: str, job_id: str, entry: dict[str, Any] | None, queue: dict[str, tuple[str, str]] | None,
           checked: bool) -> JobState:
    status = read_job(folder, checked=checked)[0]
    slurm_id = entry.get("slurm_id") if entry else None
    log = entry.get("log") if entry else None
    state = JobState(job_id, status["state"], slurm_id, log=log)
    if status["state"] == DONE:
        return state
    queued = queue.get(slurm_id) if (queue is not None and slurm_id) else None
    if queued is not None and queued[0] in ACTIVE_QUEUE_STATES | WAITING_QUEUE_STATES:
        state.state = RUNNING if queued[0] in ACTIVE_QUEUE_STATES else PENDING
        state.reason = queue_reason(queued[1]) if state.state == PENDING else ""
        return state
    if status["state"] == FAILED:
        state.reason = status.get("error", "")
        state.setup_failure = bool(status.get("setup_failure"))
        state.traceback = status.get("traceback", "") or log_tail(log)
        return state
    if status["state"] == CORRUPT:
        state.reason = status["error"]
        return state
    if status["state"] == RUNNING and (holder := lock_holder(Path(folder))):
        state.reason = f"held by {holder}"
        return state
    if entry is None:
        state.state = INTERRUPTED if status["state"] == RUNNING else NEW
        return state
    if queue is None:  # submitted, no squeue here: we cannot tell, so we do not resubmit
        state.state = status["state"] if status["state"] == RUNNING else QUEUED
        return state
    tail = log_tail(log)
    ended = queued[0] if queued is not None else ""
    cancelled_in_log = any("CANCELLED AT" in line and "REQUEUE" not in line for line in tail.splitlines())
    state.state = CANCELLED if "CANCELLED" in ended or cancelled_in_log else LOST
    state.reason = ("cancelled" if state.state == CANCELLED else
                    f"left the queue without finishing ({ended or 'killed, out of memory, node failure or timeout'})")
    state.traceback = tail
    return state
