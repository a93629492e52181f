"""Read job directories into tidy tables: one row per (job, round), one row per job.

The report reads nothing else: `metrics.json` gives the records, `spec.json` what was asked for,
`status.json` whether the job is done, failed or still pending, and `provenance.json` the code
version. Given the specs of a grid, jobs of the grid with no folder yet are listed as missing. Records
carry their job's `ablation`; an ablated job's method reads e.g. `snip (shuffle)`, so the tables and
figures give it its own row and curve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.atomic import read_json
from bench.jobs import DONE, FAILED, JOBS_FOLDER, read_metrics, read_status
from bench.spec import FOUND, NO_ABLATION, JobSpec

MISSING = "missing"
JOB_COLUMNS = ["job_id", "method", "dataset", "arch", "trial", "level", "hparams", "train", "state", "error", "folder",
               "git_sha", "ablation"]


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
    def missing(self) -> pd.DataFrame:
        return self.jobs[~self.jobs.state.isin([DONE, FAILED])]


def _job_row(folder: Path, spec: JobSpec, job_id: str) -> dict:
    status = read_status(folder) if folder.exists() else {"state": MISSING}
    provenance_path = folder / "provenance.json"
    provenance = read_json(provenance_path) if provenance_path.exists() else {}
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
        "ablation": spec.ablation,
    }


def collect(results: Path, specs: list[JobSpec] | None = None) -> Collection:
    """Every job under `results/jobs/` (or exactly the jobs of `specs`) and their records."""
    jobs_root = Path(results) / JOBS_FOLDER
    if specs is None:  # what is on disk, under the ids it was written with
        stored = [read_json(path) for path in sorted(jobs_root.glob("*/spec.json"))]
        listed = [(JobSpec.from_dict(entry["spec"]), entry["job_id"]) for entry in stored]
    else:
        listed = [(spec, spec.job_id) for spec in specs]
    job_rows, record_rows = [], []
    for spec, job_id in listed:
        folder = jobs_root / job_id
        job = _job_row(folder, spec, job_id)
        job_rows.append(job)
        if job["state"] != DONE:
            continue
        for record in read_metrics(folder):
            row = {key: job[key] for key in ("level", "hparams", "train", "git_sha")}
            row |= {key: value for key, value in record.items() if key != "extra"}
            row["extra"] = record.get("extra", {})
            row["ablation"] = job["ablation"]
            if job["ablation"] != NO_ABLATION:  # an ablated method is its own row of every table and figure
                row["method"] = f"{row['method']} ({job['ablation']})"
            record_rows.append(row)
    jobs = pd.DataFrame(job_rows, columns=JOB_COLUMNS)
    records = pd.DataFrame(record_rows)
    return Collection(records=records, jobs=jobs)
