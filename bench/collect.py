"""Read job directories into tidy tables: one row per (job, round), one row per job.

The report reads nothing else: `metrics.json` gives the records, `spec.json` what was asked for,
`status.json` whether the job is done, failed or still pending, and `provenance.json` the code
version. Given the plan of a grid (`grid.plan()`: analysis jobs included), every job of the plan is
accounted for: done, failed, `blocked` (a job it waits for failed; the error names it), `corrupt`
(a file that cannot be read is named) or missing. An unreadable file never drops a row or stops the
collection. Records
carry their job's `ablation`; an ablated job's method reads e.g. `snip (shuffle)`, so the tables and
figures give it its own row and curve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.ablations import NO_ABLATION
from bench.atomic import CorruptFileError, read_json
from bench.grid import PlannedJob
from bench.spec import FOUND, JobSpec
from bench.store import CORRUPT, DONE, FAILED, JOBS_FOLDER, read_metrics, read_status

MISSING, BLOCKED = "missing", "blocked"
JOB_COLUMNS = ["job_id", "method", "dataset", "arch", "trial", "level", "hparams", "train", "state", "error", "folder",
               "git_sha", "threads", "ablation", "method_version", "method_source"]


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


def _job_row(folder: Path, spec: JobSpec, job_id: str) -> dict:
    status = read_status(folder) if folder.exists() else {"state": MISSING}
    provenance_path = folder / "provenance.json"
    try:
        provenance = read_json(provenance_path) if provenance_path.exists() else {}
    except CorruptFileError:  # provenance is informative only; the row stays
        provenance = {}
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
    }


def _stored_specs(jobs_root: Path) -> tuple[list[tuple[JobSpec, str]], list[dict]]:
    """The specs on disk under the ids they were written with, and a row for each unreadable spec.json."""
    listed, unreadable = [], []
    for path in sorted(jobs_root.glob("*/spec.json")):
        try:
            entry = read_json(path)
            listed.append((JobSpec.from_dict(entry["spec"]), entry["job_id"]))
        except (CorruptFileError, KeyError, TypeError) as error:
            why = str(error) if isinstance(error, CorruptFileError) else f"{path} lacks a job spec ({error})"
            unreadable.append(dict.fromkeys(JOB_COLUMNS, "") | {"job_id": path.parent.name, "state": CORRUPT,
                                                                 "error": why, "folder": str(path.parent)})
    return listed, unreadable


def collect(results: Path, plan: list[PlannedJob] | list[JobSpec] | None = None) -> Collection:
    """Every job under `results/jobs/` (or exactly the jobs of `plan`) and their records.

    A job of the plan that waits for a failed (or blocked) job is `blocked`, its error naming it.
    """
    jobs_root = Path(results) / JOBS_FOLDER
    job_rows: list[dict] = []
    if plan is None:  # what is on disk, under the ids it was written with
        listed, job_rows = _stored_specs(jobs_root)
        after: dict[str, tuple[str, ...]] = {}
    else:
        planned = [job if isinstance(job, PlannedJob) else PlannedJob(job) for job in plan]
        listed = [(job.spec, job.job_id) for job in planned]
        after = {job.job_id: job.after for job in planned}
    states: dict[str, str] = {}
    record_rows = []
    for spec, job_id in listed:
        folder = jobs_root / job_id
        job = _job_row(folder, spec, job_id)
        stuck = next((dep for dep in after.get(job_id, ()) if states.get(dep) in (FAILED, BLOCKED)), None)
        if stuck is not None and job["state"] != DONE:
            job |= {"state": BLOCKED, "error": f"blocked by {stuck}, which is {states[stuck]}"
                    + ("" if states[stuck] == BLOCKED else " (see its status.json)")}
        states[job_id] = job["state"]
        if job["state"] == DONE:
            try:
                records = read_metrics(folder)
            except CorruptFileError as error:  # changed since read_status looked: the row stays, marked
                job |= {"state": CORRUPT, "error": str(error)}
                records = []
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
    records = pd.DataFrame(record_rows)
    return Collection(records=records, jobs=jobs)
