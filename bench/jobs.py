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

Folders, statuses, records and the job's lock on disk are `bench.store`'s. `run_job(path)` takes only
the path of `spec.json` (a small picklable argument for submitit), skips a
finished job, resumes an interrupted one from its checkpoints, and records a failure (a diverged loss,
a bad setting, a crash) as `failed` with the reason instead of losing it. It holds the job's lock for
the whole run: a second `bench.run` on the same results folder, or a second SLURM attempt, finds the
lock held and skips the job (`held_by` in the returned status); the kernel drops the lock when its
holder dies, so an interrupted job is never left locked. A job recorded `done` whose `metrics.json` is
missing or unreadable is `corrupt`, not done, and is run again (resuming from its checkpoints). A job
that failed while loading its data or reaching its device (`setup_failure`: a rerun with corrected
flags fixes it) is retried without `retry_failed`. A link in the job folder that points outside it
is refused, so no write follows it: a job folder that is itself a link leading out of the results
folder (or `jobs/` as one), a `lock`, `epochs.csv` or any entry linking out, fails that job with one line
naming the link, before anything is written through it (`bench.safe_paths`). So does a spec.json that
holds another job's spec, and a job folder that cannot be written (read-only, immutable): the other
jobs of the run go on. A job that meets a shared stage another process is computing, inside
`bench.stages.deferring_held_stages()`, stops there and is left as it was (`deferred` in the returned
status names the stage folder), so that the `local` pool can run another job meanwhile.
"""

from __future__ import annotations

import csv
import io
import socket
import time
import traceback
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.atomic import CorruptFileError, read_json, write_json, write_text
from bench.data import DataSettings, DeviceData, load_dataset
from bench.epoch_logs import epoch_listeners
from bench.errors import BenchError, DivergedError
from bench.found import found_sparsity
from bench.job_context import JobContext
from bench.method_identity import methods_used
from bench.provenance import provenance
from bench.record_check import check_record
from bench.safe_paths import LinkOutError, check_tree
from bench.settings_build import build_settings
from bench.spec import FOUND, JobSpec, RunSettings
from bench.stages import StageHeld, StageNeed, request
from bench.store import (
    CORRUPT,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    job_folder_refusal,
    job_lock,
    read_status,
    stored_job_id,
)
from bench.train import EpochLog, Trainer, TrainSettings
from methods.registry import Method, check_ablation, get_method

TRACEBACK_LINES = 25


class SetupError(BenchError):
    """A job could not load its data or reach its device: a rerun with corrected flags fixes it."""


def train_settings_for(spec: JobSpec) -> TrainSettings:
    return build_settings(TrainSettings, spec.train, "training")


def resolve_sparsity(spec: JobSpec, method_class, results: Path) -> float | None:
    if spec.sparsity == FOUND:
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
    refusal = job_folder_refusal(folder)
    if refusal is not None:  # nothing may be written there, not even the failure
        return _refused(folder, refusal, record=False)
    try:
        check_tree(folder, folder)
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
    except (LinkOutError, CorruptFileError) as error:  # a link out, a spec.json of another job or unreadable
        return _refused(folder, str(error), record=True)
    except OSError as error:  # a folder that cannot be written: this job fails, the run goes on
        return _refused(folder, f"job folder {folder} cannot be written ({error.strerror}: {error.filename}); "
                                "accepted: a writable folder", record=False)


def record_lost(spec_path: str | Path) -> dict[str, Any]:
    """Record as failed the job whose process died without a word (killed by the OS); return its status."""
    folder = Path(spec_path).parent
    with job_lock(folder) as holder:
        status = read_status(folder)
        if holder is not None or status["state"] == DONE:
            return status
        status |= {"state": FAILED, "finished": time.time(), "error": "its worker process died twice without a "
                   "word (killed by the OS, e.g. out of memory); --retry-failed resumes it from its checkpoint"}
        write_json(folder / "status.json", status)
        return status


def _refused(folder: Path, why: str, record: bool) -> dict[str, Any]:
    """Fail the job in `folder` without running it: one line, and its status.json where it may be written."""
    print(f"job {folder.name} failed: {why}", flush=True)
    now = time.time()
    status = {"state": FAILED, "job_id": folder.name, "started": now, "finished": now, "error": why, "refused": True}
    if record:
        write_json(folder / "status.json", status)
    return status


def _run_locked(spec_path: Path, folder: Path, previous: dict[str, Any]) -> dict[str, Any]:
    stored = read_json(spec_path)
    if stored_job_id(stored) != folder.name:
        raise CorruptFileError(f"{spec_path} holds the spec of job {stored_job_id(stored)}, not of {folder.name}; "
                           "accepted: the spec bench.run writes (rerun bench.run, which sets it aside)")
    spec, run = JobSpec.from_dict(stored["spec"]), RunSettings.from_dict(stored["run"])
    results = folder.parent.parent
    started = time.time()
    status = {"state": RUNNING, "job_id": spec.job_id, "started": started,
              "attempt": previous.get("attempt", 0) + 1, "host": socket.gethostname()}
    write_json(folder / "status.json", status)
    try:
        write_json(folder / "provenance.json", provenance(_device(run.device)))
        records, layer_rows = _execute(spec, run, folder, results)
    except StageHeld as held:  # a local pool runs other jobs first (`deferring_held_stages`): leave it as it was
        if previous["state"] in (PENDING, CORRUPT):
            (folder / "status.json").unlink(missing_ok=True)
        else:
            write_json(folder / "status.json", previous)
        return previous | {"deferred": str(held.folder)}
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


def method_for(spec: JobSpec) -> Method:
    """The job's method with its settings (a one-line BenchError for a bad setting or ablation)."""
    method_class = get_method(spec.method)
    method = method_class(build_settings(method_class.Settings, spec.hparams, f"method {spec.method}"))
    check_ablation(method_class, spec.ablation)
    return method


def stage_needs(spec: JobSpec) -> list[StageNeed]:
    """The shared stages the job declares (`Method.stage_needs`); none where a setting is bad (the job
    fails with it when it runs)."""
    try:
        return method_for(spec).stage_needs(spec, train_settings_for(spec))
    except BenchError:
        return []


def request_stages(results: Path, specs: Iterable[JobSpec]) -> None:
    """Ask the shared stages the jobs declare for their snapshots, before any job runs, so the first job
    that computes a stage keeps what every job of the plan reads."""
    for spec in specs:
        for need in stage_needs(spec):
            request(results, need.stage, need.requests)


def stage_folders(folder: Path) -> list[Path]:
    """The folders of the shared stages that the job in `folder` (its spec.json) reads."""
    spec = JobSpec.from_dict(read_json(Path(folder) / "spec.json")["spec"])
    return [need.stage.folder(Path(folder).parent.parent) for need in stage_needs(spec)]


def make_context(spec: JobSpec, run: RunSettings, folder: Path, results: Path) -> JobContext:
    """Everything a method needs to run `spec` in `folder`: settings, data on the device, the trainer."""
    method = method_for(spec)
    method_class = type(method)
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
    stages = [need.stage.folder(results).name for need in stage_needs(spec)]  # the report reads them without code
    write_json(folder / "provenance.json", read_json(folder / "provenance.json") | {
        "data": origin, "methods": methods_used(spec), "stages": stages})
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
