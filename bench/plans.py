"""The plan a results folder was run with: `<results>/plan.json`, written by `bench.run`, read by the report.

Each `bench.run` (not `--dry-run`) appends what it ran: the grid, every override on its command line
(`--methods`, `--epochs`, `--set`, `--filter`, ...), when, and the ids of its planned jobs (the IMC
analysis jobs they wait for included). The jobs themselves are stored once by id with their spec, so
`bench.report --results DIR` reports exactly the jobs that were run into DIR, whatever grid and
overrides they came from, without re-expanding a grid. A rerun of the same command adds no new entry.

The file is read, extended and written under an exclusive lock (`plan.lock`), so that runs started at
once into one folder all keep their entries. A plan.json that is unreadable or of the wrong shape is
set aside as `plan.json.corrupt` by `bench.run` (which then starts a new one, saying so), and named in
one line by the report.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.atomic import CorruptFileError, read_json, write_json
from bench.grid import PlannedJob
from bench.spec import JobSpec
from bench.stages import exclusive

PLAN_FILE = "plan.json"


def plan_path(results: Path) -> Path:
    return Path(results) / PLAN_FILE


def record_plan(results: Path, grid: str, overrides: dict[str, Any], planned: list[PlannedJob], quick: bool = False
                ) -> Path:
    """Add this run (grid, overrides, job ids) and its jobs' specs to `<results>/plan.json`."""
    path = plan_path(results)
    with exclusive(Path(results) / "plan.lock"):
        try:
            stored = _read(path) or {"runs": [], "jobs": {}}
        except CorruptFileError as error:
            path.replace(path.with_name(path.name + ".corrupt"))
            print(f"warning: {error}; set aside as {path.name}.corrupt, starting a new plan", flush=True)
            stored = {"runs": [], "jobs": {}}
        _add(stored, grid, overrides, planned, quick)
        write_json(path, stored)
    return path


def _add(stored: dict[str, Any], grid: str, overrides: dict[str, Any], planned: list[PlannedJob], quick: bool
         ) -> None:
    job_ids = [job.job_id for job in planned]
    run = {"grid": grid, "overrides": overrides, "job_ids": job_ids} | ({"quick": True} if quick else {})
    if not any({key: entry.get(key) for key in run} == run for entry in stored["runs"]):
        stored["runs"].append(run | {"started": datetime.now(UTC).isoformat(timespec="seconds")})
    for job in planned:
        stored["jobs"].setdefault(job.job_id, {"spec": asdict(job.spec), "after": list(job.after)})


def _read(path: Path) -> dict[str, Any] | None:
    """The plan, or None if there is none; `CorruptFileError` if it is unreadable or of the wrong shape."""
    if not path.exists() and not path.is_symlink():
        return None
    stored = read_json(path)
    try:
        runs, jobs = stored["runs"], stored["jobs"]
        valid = isinstance(runs, list) and isinstance(jobs, dict) and all(
            isinstance(run["grid"], str) and isinstance(run["overrides"], dict)
            and all(isinstance(jobs[job_id]["spec"], dict) for job_id in run["job_ids"]) for run in runs)
    except (KeyError, TypeError):
        valid = False
    if not valid:
        raise CorruptFileError(f"{path} is not a plan (wrong shape); accepted: the plan.json bench.run writes; "
                               "delete it (the next bench.run writes it again) or pass --all-jobs or --grid NAME")
    return stored


def recorded_jobs(results: Path) -> list[PlannedJob] | None:
    """Every job a `bench.run` into `results` planned, in run order, under the ids it ran with (no method
    code is needed to find them); None if none was recorded."""
    stored = _read(plan_path(results))
    if stored is None:
        return None
    ordered = dict.fromkeys(job_id for run in stored["runs"] for job_id in run["job_ids"])
    return [PlannedJob(JobSpec.from_dict(stored["jobs"][job_id]["spec"]), tuple(stored["jobs"][job_id]["after"]),
                       recorded_id=job_id) for job_id in ordered]


def describe_runs(results: Path) -> str:
    """One Markdown bullet per recorded run: grid, overrides and job count."""
    stored = _read(plan_path(results)) or {"runs": []}
    lines = []
    for run in stored["runs"]:
        overrides = " ".join(f"`{flag} {item}`" for flag, value in run["overrides"].items()
                             for item in (value if isinstance(value, list) else [value])) or "no overrides"
        quick = (", with each method's cheap quick settings (`quick_hparams`), not its defaults"
                 if run.get("quick") else "")
        lines.append(f"- {run.get('started', '')}: grid `{run['grid']}`, {overrides}{quick}: {len(run['job_ids'])} job(s)")
    return "\n".join(lines)
