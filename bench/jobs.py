"""Job directories and running one job: the unit the executors (inline, local, SLURM) hand around.

A job directory `<results>/jobs/<job id>/` holds:
  spec.json        the job spec (hashed into the id) and the run settings (not hashed)
  status.json      state (pending | running | done | failed), times, attempts, host, error + traceback tail
  metrics.json     one record per round (written once, at the end)
  epochs.csv       one row per trained epoch, flushed every epoch (test columns every eval_every epochs)
  layers.csv       per-layer sparsity of each round's mask
  provenance.json  git sha, torch/CUDA versions, device, host, SLURM ids
  ckpt/            per-phase epoch checkpoints and snapshots (resume)

`run_job(path)` takes only the path of `spec.json` (a small picklable argument for submitit), skips a
finished job, resumes an interrupted one from its checkpoints, and records a failure (a diverged loss,
a bad setting, a crash) as `failed` with the reason instead of losing it.
"""

from __future__ import annotations

import csv
import io
import socket
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bench.atomic import read_json, write_json, write_text
from bench.data import DeviceData, load_dataset
from bench.epoch_logs import epoch_listeners
from bench.errors import BenchError, DivergedError
from bench.provenance import provenance
from bench.spec import FOUND, JobSpec, RunSettings
from bench.train import EpochLog, Trainer, TrainSettings
from methods.base import JobContext, build_settings, check_record
from methods.registry import get_method

JOBS_FOLDER = "jobs"
TRACEBACK_LINES = 25
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


def train_settings_for(spec: JobSpec) -> TrainSettings:
    return build_settings(TrainSettings, spec.train, "training")


def resolve_sparsity(spec: JobSpec, method_class, results: Path) -> float | None:
    if spec.sparsity == FOUND:
        from bench.found import found_sparsity

        return found_sparsity(spec, results)
    if method_class.takes_sparsity and spec.sparsity is None and not method_class.finds_sparsity:
        raise BenchError(f"method {spec.method} needs a sparsity; accepted: a float in [0, 1) or 'found'")
    return spec.sparsity


def run_job(spec_path: str | Path, retry_failed: bool = False) -> dict[str, Any]:
    """Run the job whose spec.json is at `spec_path`; return its final status."""
    folder = Path(spec_path).parent
    status = read_status(folder)
    if status["state"] == DONE or (status["state"] == FAILED and not retry_failed):
        return status
    stored = read_json(spec_path)
    spec, run = JobSpec.from_dict(stored["spec"]), RunSettings.from_dict(stored["run"])
    results = folder.parent.parent
    started = time.time()
    status = {"state": RUNNING, "job_id": spec.job_id, "started": started,
              "attempt": status.get("attempt", 0) + 1, "host": socket.gethostname()}
    write_json(folder / "status.json", status)
    device = torch.device(run.device)
    write_json(folder / "provenance.json", provenance(device))
    try:
        records, layer_rows = _execute(spec, run, folder, results)
    except Exception as error:  # the grid goes on; the failure is recorded, not lost
        reason = f"diverged: {error}" if isinstance(error, DivergedError) else f"{type(error).__name__}: {error}"
        tail = "".join(traceback.format_exception(error)).splitlines()[-TRACEBACK_LINES:]
        status |= {"state": FAILED, "finished": time.time(), "error": reason, "traceback": "\n".join(tail)}
        write_json(folder / "status.json", status)
        return status
    write_json(folder / "metrics.json", records)
    write_text(folder / "layers.csv", _csv(layer_rows))
    status |= {"state": DONE, "finished": time.time(), "seconds": time.time() - started}
    write_json(folder / "status.json", status)
    return status


def make_context(spec: JobSpec, run: RunSettings, folder: Path, results: Path) -> JobContext:
    """Everything a method needs to run `spec` in `folder`: settings, data on the device, the trainer."""
    method_class = get_method(spec.method)
    method = method_class(build_settings(method_class.Settings, spec.hparams, f"method {spec.method}"))
    sparsity = resolve_sparsity(spec, method_class, results)
    train_settings = train_settings_for(spec)
    data = DeviceData(load_dataset(spec.dataset, run.data), torch.device(run.device))
    epoch_log = EpochLog(folder / "epochs.csv", epoch_listeners(spec.job_id, folder, run.log_every, run.log))
    trainer = Trainer(data, spec.trial, folder / "ckpt", epoch_log, progress=run.progress,
                      checkpoint_interval_s=run.checkpoint_interval_s)
    return JobContext(spec.job_id, spec, method, data, folder, trainer, train_settings, sparsity)


def _execute(spec: JobSpec, run: RunSettings, folder: Path, results: Path):
    context = make_context(spec, run, folder, results)
    origin = {"dataset": spec.dataset, "data_root": run.data.data_root, "layout": context.data.data.layout}
    write_json(folder / "provenance.json", read_json(folder / "provenance.json") | {"data": origin})
    records = context.method.run(context)
    if not records:
        raise RuntimeError(f"method {spec.method} returned no record")
    for record in records:
        check_record(record, context.method)
    return records, context.layer_rows


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    path = Path(folder) / "metrics.json"
    return read_json(path) if path.exists() else []
