"""Read job directories into tidy tables: one row per (job, round), one row per job.

The report reads nothing else: `metrics.json` gives the records, `spec.json` what was asked for,
`status.json` whether the job is done, failed or still pending, and `provenance.json` the code
version. Given the plan of a grid (`grid.plan()`: analysis jobs included), every job of the plan is
accounted for: done, failed, `blocked` (a job it waits for failed; the error names it), `corrupt`
(a file that cannot be read is named) or missing. An unreadable file never drops a row or stops the
collection. Records
carry their job's `ablation`; an ablated job's method reads e.g. `snip (shuffle)`, so the tables and
figures give it its own row and curve. Jobs of one method (on one dataset and arch) that ran with
different settings are never pooled: each gets the settings that differ in its label, e.g.
`synflow (iterations=5)` beside `synflow (iterations=default)` (`base_method` keeps the method's name).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench import forks
from bench.ablations import NO_ABLATION
from bench.atomic import CorruptFileError, read_json
from bench.errors import BenchError
from bench.grid import PlannedJob
from bench.spec import FOUND, JobSpec
from bench.store import (
    CORRUPT,
    DONE,
    FAILED,
    JOBS_FOLDER,
    job_folder_refusal,
    listed_job_folders,
    read_job,
    read_status,
)
from bench.threads import available_cores

MISSING, BLOCKED = "missing", "blocked"
DEFAULT = "default"
JOB_COLUMNS = ["job_id", "method", "dataset", "arch", "trial", "level", "hparams", "train", "state", "error", "folder",
               "git_sha", "threads", "ablation", "method_version", "method_source", "method_sources"]


def level_label(sparsity: float | str | None) -> str:
    """The requested sparsity as a label: 'found', 'none' (dense, or found by the method) or '0.4'."""
    if sparsity is None:
        return "none"
    return FOUND if sparsity == FOUND else f"{float(sparsity):g}"


@dataclass
class Collection:
    records: pd.DataFrame
    jobs: pd.DataFrame

    @property
    def failed(self) -> pd.DataFrame:
        return self.jobs[self.jobs.state == FAILED]

    @property
    def blocked(self) -> pd.DataFrame:
        return self.jobs[self.jobs.state == BLOCKED]

    @property
    def missing(self) -> pd.DataFrame:
        """Jobs neither done, failed nor blocked: missing, corrupt (the file named) or unfinished."""
        return self.jobs[~self.jobs.state.isin([DONE, FAILED, BLOCKED])]


def _job_row(folder: Path, spec: JobSpec, job_id: str, plain: bool) -> tuple[dict, list[dict]]:
    """The job's row of the jobs table and its records (none unless it is done); `plain`: the folder is
    listed as a plain folder (`listed_job_folders`), so it needs no link check."""
    refusal = None if plain else job_folder_refusal(folder)  # nothing is read through a link out of results
    if refusal:
        status, records = {"state": CORRUPT, "error": refusal}, []
    else:
        status, records = read_job(folder, checked=True) if plain or folder.exists() else ({"state": MISSING}, [])
    try:
        provenance = read_json(os.path.join(folder, "provenance.json")) if not refusal else {}
    except (FileNotFoundError, CorruptFileError):  # provenance is informative only; the row stays
        provenance = {}
    provenance = provenance if isinstance(provenance, dict) else {}
    method_code = (provenance.get("methods") or {}).get(spec.method) or {}
    return {
        "job_id": job_id,
        "method": spec.method,
        "dataset": spec.dataset,
        "arch": spec.arch,
        "trial": spec.trial,
        "level": level_label(spec.sparsity),
        "hparams": json.dumps(spec.hparams, sort_keys=True),
        "train": json.dumps(spec.train, sort_keys=True),
        "state": status["state"],
        "error": status.get("error", ""),
        "folder": str(folder),
        "git_sha": (provenance.get("git") or {}).get("sha"),
        "threads": provenance.get("threads"),
        "ablation": spec.ablation,
        "method_version": method_code.get("version", ""),
        "method_source": method_code.get("source_sha256", ""),
        "method_sources": json.dumps(method_code.get("sources") or {}, sort_keys=True),  # module -> sha256
    }, records


def _stored_job(jobs_root: Path, name: str, plain: bool) -> tuple[dict, list[dict], bool]:
    """The row and records of the job folder `name` under the id its spec.json was written with, and
    whether that spec could be read; a folder whose spec.json is missing, unreadable or holds another
    job's spec gets a `corrupt` row naming the file (and no records).

    A spec.json must name its folder's id. The spec is not hashed again here: hashing needs every
    method's code (a plugin that is not installed, torch), and the report reads records, not code. The
    runner hashes it before it reuses a folder (`bench.jobs`), which sets a mismatch aside."""
    folder = jobs_root / name
    path = os.path.join(folder, "spec.json")  # strings, not paths: this runs once per job folder
    try:
        if not plain and (refusal := job_folder_refusal(folder)):  # no read through a link out
            raise CorruptFileError(refusal)
        try:
            entry = read_json(path)
        except FileNotFoundError:
            raise CorruptFileError(f"{path} is missing (state {read_status(folder)['state']}); rerun the "
                                   "bench.run that made it, which writes it again") from None
        claimed = entry.get("job_id") if isinstance(entry, dict) else None
        if claimed != name:
            raise CorruptFileError(f"{path} holds the spec of job {claimed}, not of {name}")
        try:
            spec = JobSpec.from_dict(entry["spec"])
        except (KeyError, TypeError, BenchError) as error:  # the spec itself has the wrong shape
            raise CorruptFileError(f"{path} holds no job spec ({error}); rerun the bench.run that made it") \
                from None
    except CorruptFileError as error:
        return dict.fromkeys(JOB_COLUMNS, "") | {"job_id": name, "state": CORRUPT, "error": str(error),
                                                 "folder": str(folder)}, [], False
    return *_job_row(folder, spec, name, plain), True


FORKED_READ_FROM = 2000
"""From this many job folders on, `collect` reads them in forked children, one chunk per core."""


def collect(results: Path, plan: list[PlannedJob] | list[JobSpec] | None = None) -> Collection:
    """Every job under `results/jobs/` (or exactly the jobs of `plan`) and their records.

    A job of the plan that waits for a failed (or blocked) job is `blocked`, its error naming it. The
    folders are read in forked children where there are many (`FORKED_READ_FROM`; `bench.forks`).
    """
    jobs_root = Path(results) / JOBS_FOLDER
    folders = listed_job_folders(results)  # one directory read: which folders need no link check
    if plan is None:  # what is on disk, under the ids it was written with
        def read(names: list[str]) -> list[tuple[dict, list[dict], bool]]:
            return [_stored_job(jobs_root, name, folders[name]) for name in names]

        items = sorted(folders)
        after: dict[str, tuple[str, ...]] = {}
    else:
        planned = [job if isinstance(job, PlannedJob) else PlannedJob(job) for job in plan]
        specs = {job.job_id: job.spec for job in planned}

        def read(job_ids: list[str]) -> list[tuple[dict, list[dict], bool]]:
            return [(*_job_row(jobs_root / job_id, specs[job_id], job_id, folders.get(job_id, False)), True)
                    for job_id in job_ids]

        items = [job.job_id for job in planned]
        after = {job.job_id: job.after for job in planned}
    read_rows = forks.split_map(read, items, available_cores() if len(items) >= FORKED_READ_FROM else 1)
    job_rows = [job for job, _, listed in read_rows if not listed]  # unreadable specs first
    states: dict[str, str] = {}
    record_rows = []
    for job, records, listed in read_rows:
        if not listed:
            continue
        job_id = job["job_id"]
        stuck = next((dep for dep in after.get(job_id, ()) if states.get(dep) in (FAILED, BLOCKED)), None)
        if stuck is not None and job["state"] != DONE:
            job |= {"state": BLOCKED, "error": f"blocked by {stuck}, which is {states[stuck]}"
                    + ("" if states[stuck] == BLOCKED else " (see its status.json)")}
        states[job_id] = job["state"]
        if job["state"] == DONE:
            for record in records:
                row = {key: job[key] for key in ("level", "hparams", "train", "git_sha")}
                row |= {key: value for key, value in record.items() if key != "extra"}
                row["extra"] = record.get("extra", {})
                row["ablation"] = job["ablation"]
                if job["ablation"] != NO_ABLATION:  # an ablated method is its own row of every table and figure
                    row["method"] = f"{row['method']} ({job['ablation']})"
                record_rows.append(row)
        job_rows.append(job)
    jobs = pd.DataFrame(job_rows, columns=JOB_COLUMNS)
    records = apart_by_settings(pd.DataFrame(record_rows))
    return Collection(records=records, jobs=jobs)


def _settings(hparams: str, train: str) -> dict[str, object]:
    """A job's non-default settings from its spec's hparams and train (JSON), train's prefixed `train.`."""
    return json.loads(hparams) | {f"train.{key}": value for key, value in json.loads(train).items()}


def apart_by_settings(records: pd.DataFrame) -> pd.DataFrame:
    """Records whose method, on one dataset and arch, ran with different settings get the settings that
    differ in their method label (`synflow (iterations=5)` beside `synflow (iterations=default)`), so
    that no table row or curve pools them; `base_method` keeps the method's name."""
    if records.empty:
        return records
    records = records.assign(base_method=records.method)
    parsed = {pair: _settings(*pair) for pair in set(zip(records.hparams, records.train, strict=True))}
    for _, group in records.groupby(["method", "dataset", "arch"]):
        pairs = list(zip(group.hparams, group.train, strict=True))
        distinct = [parsed[pair] for pair in set(pairs)]  # thousands of trials share a few settings
        keys = sorted({key for entry in distinct for key in entry})
        differing = [key for key in keys if len({json.dumps(entry.get(key)) for entry in distinct}) > 1]
        if differing:
            records.loc[group.index, "method"] = [
                f"{method} ({', '.join(f'{key}={parsed[pair].get(key, DEFAULT)}' for key in differing)})"
                for method, pair in zip(group.method, pairs, strict=True)]
    return records
