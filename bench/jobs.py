"""Job directories and running one job: the unit the executors (inline, local, SLURM) hand around.

A job directory `<results>/jobs/<job id>/` holds:
  spec.json        the job spec (hashed into the id) and the run settings (not hashed)
  status.json      state (pending | running | done | failed), times, attempts, host, error + traceback tail
  metrics.json     one record per round (written once, at the end)
  epochs.csv       one row per trained epoch, flushed every epoch (test columns every eval_every epochs)
  layers.csv       per-layer sparsity of each round's mask
  provenance.json  git sha, torch/CUDA versions, device, host, SLURM ids
  ckpt/            per-phase epoch checkpoints and snapshots (resume)
  lock             the run's exclusive flock; holds "pid host" of the process running the job

`run_job(path)` takes only the path of `spec.json` (a small picklable argument for submitit), skips a
finished job, resumes an interrupted one from its checkpoints, and records a failure (a diverged loss,
a bad setting, a crash) as `failed` with the reason instead of losing it. It holds the job's lock for
the whole run: a second `bench.run` on the same results folder, or a second SLURM attempt, finds the
lock held and skips the job (`held_by` in the returned status); the kernel drops the lock when its
holder dies, so an interrupted job is never left locked. A job recorded `done` whose `metrics.json` is
missing or unreadable is `corrupt`, not done, and is run again (resuming from its checkpoints). A job
that failed while loading its data or reaching its device (`setup_failure`: a rerun with corrected
flags fixes it) is retried without `retry_failed`. A link in the job folder that points outside it
is refused, so no write follows it.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from bench.atomic import CorruptFileError, read_json, write_json, write_text
from bench.data import DataSettings, DeviceData, load_dataset
from bench.epoch_logs import epoch_listeners
from bench.errors import BenchError, DivergedError
from bench.provenance import provenance
from bench.spec import FOUND, JobSpec, RunSettings
from bench.train import EpochLog, Trainer, TrainSettings
from methods.base import JobContext, build_settings, check_ablation, check_record
from methods.registry import get_method

JOBS_FOLDER = "jobs"
TRACEBACK_LINES = 25
DONE, FAILED, RUNNING, PENDING, CORRUPT = "done", "failed", "running", "pending", "corrupt"
LOCK_FILE = "lock"


class SetupError(BenchError):
    """A job could not load its data or reach its device: a rerun with corrected flags fixes it."""


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


def check_links(folder: Path) -> None:
    """Refuse a link inside the job folder that points outside it (a write would follow it)."""
    inside = Path(folder).resolve()
    for root, directories, files in os.walk(folder):
        for name in directories + files:
            path = Path(root) / name
            if path.is_symlink() and not path.resolve().is_relative_to(inside):
                raise SetupError(f"{path} is a link to {path.resolve()}, outside the job folder; accepted: "
                                 "plain files and folders (remove the link)")

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
    """Run the job whose spec.json is at `spec_path` under its lock; return its final status.

    The status returned has `held_by` when another live process holds the job (nothing was run),
    and `kept` when a failed job was left as it is (rerun it with `retry_failed`).
    """
    folder = Path(spec_path).parent
    with job_lock(folder) as holder:
        if holder is not None:
            return read_status(folder) | {"held_by": holder}
        status = read_status(folder)
        if status["state"] == DONE:
            return status
        if status["state"] == FAILED and not retry_failed and not status.get("setup_failure"):
            return status | {"kept": True}
        if status["state"] == CORRUPT:
            print(f"warning: job {folder.name} is not done: {status['error']}; running it again", flush=True)
        return _run_locked(Path(spec_path), folder, status)


def _run_locked(spec_path: Path, folder: Path, previous: dict[str, Any]) -> dict[str, Any]:
    stored = read_json(spec_path)
    spec, run = JobSpec.from_dict(stored["spec"]), RunSettings.from_dict(stored["run"])
    results = folder.parent.parent
    started = time.time()
    status = {"state": RUNNING, "job_id": spec.job_id, "started": started,
              "attempt": previous.get("attempt", 0) + 1, "host": socket.gethostname()}
    write_json(folder / "status.json", status)
    try:
        check_links(folder)
        write_json(folder / "provenance.json", provenance(_device(run.device)))
        records, layer_rows = _execute(spec, run, folder, results)
    except Exception as error:  # the grid goes on; the failure is recorded, not lost
        reason = f"diverged: {error}" if isinstance(error, DivergedError) else f"{type(error).__name__}: {error}"
        tail = "".join(traceback.format_exception(error)).splitlines()[-TRACEBACK_LINES:]
        status |= {"state": FAILED, "finished": time.time(), "error": reason, "traceback": "\n".join(tail),
                   "setup_failure": isinstance(error, SetupError)}
        write_json(folder / "status.json", status)
        return status
    write_json(folder / "metrics.json", records)
    write_text(folder / "layers.csv", _csv(layer_rows))
    status |= {"state": DONE, "finished": time.time(), "seconds": time.time() - started}
    write_json(folder / "status.json", status)
    return status


def _device(name: str) -> torch.device:
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise SetupError(f"device {name!r} is not valid ({error}); accepted: cpu, cuda, cuda:N") from None


def _device_data(dataset: str, data: DataSettings, device: str) -> DeviceData:
    """The job's data on its device; a missing data root or device is a `SetupError`."""
    try:
        return DeviceData(load_dataset(dataset, data), _device(device))
    except SetupError:
        raise
    except BenchError as error:
        raise SetupError(str(error)) from None
    except (RuntimeError, AssertionError) as error:  # torch without CUDA, a GPU index that is not there
        if "cuda" in str(error).lower() or "device" in str(error).lower():
            raise SetupError(f"device {device!r} is not usable here ({str(error).splitlines()[0]})") from None
        raise


def make_context(spec: JobSpec, run: RunSettings, folder: Path, results: Path) -> JobContext:
    """Everything a method needs to run `spec` in `folder`: settings, data on the device, the trainer."""
    method_class = get_method(spec.method)
    method = method_class(build_settings(method_class.Settings, spec.hparams, f"method {spec.method}"))
    check_ablation(method_class, spec.ablation)
    sparsity = resolve_sparsity(spec, method_class, results)
    train_settings = train_settings_for(spec)
    data = _device_data(spec.dataset, data_settings_for(spec, run), run.device)
    epoch_log = EpochLog(folder / "epochs.csv", epoch_listeners(spec.job_id, folder, run.log_every, run.log))
    trainer = Trainer(data, spec.trial, folder / "ckpt", epoch_log, progress=run.progress,
                      checkpoint_interval_s=run.checkpoint_interval_s)
    return JobContext(spec.job_id, spec, method, data, folder, trainer, train_settings, sparsity)


def data_settings_for(spec: JobSpec, run: RunSettings) -> DataSettings:
    """This machine's data settings with the job's `image_size` (which is part of the job, not the machine)."""
    return run.data if spec.image_size is None else replace(run.data, image_size=spec.image_size)


def _execute(spec: JobSpec, run: RunSettings, folder: Path, results: Path):
    context = make_context(spec, run, folder, results)
    if spec.image_size is not None and context.data.data.image_size != spec.image_size:
        raise BenchError(f"image_size {spec.image_size} does not apply to dataset {spec.dataset} (its images are "
                         f"{context.data.data.image_size}x{context.data.data.image_size}); accepted: image_size with "
                         "the resizing datasets imagefolder and imagenet-sub")
    origin = {"dataset": spec.dataset, "data_root": run.data.data_root, "layout": context.data.data.layout}
    write_json(folder / "provenance.json", read_json(folder / "provenance.json") | {"data": origin})
    records = context.run_method()
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
    """The job's records ([] when there are none); an unreadable file raises `CorruptFileError`."""
    path = Path(folder) / "metrics.json"
    return read_json(path) if path.exists() else []
