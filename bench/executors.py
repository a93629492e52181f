"""Executors on this machine: run a plan of jobs inline or in a bounded local pool (SLURM: `bench.slurm`).

Every executor hands a job only the path of its `spec.json` (`bench.jobs.run_job`), so a job is
idempotent: finished jobs are skipped, interrupted ones resume from their epoch checkpoints. Before
any job runs, every executor writes the plan's requests to the shared stages its jobs declare
(`bench.jobs.request_stages`: e.g. the rewind epochs the dense trajectory must keep); a stage is then
computed by the first job that needs it, under its lock, and the others load it or wait for it (in a
`local` pool, a job that meets a stage being computed gives its worker to another job meanwhile).

- `inline`: this process, in dependency order (IMC's analysis before the jobs at "found").
- `local`: a pool of `--workers` spawned processes, one GPU each where there are GPUs
  (`CUDA_VISIBLE_DEVICES`), or `--jobs-per-gpu N` workers sharing each GPU; a job starts when its
  dependencies are done. Each worker runs `--threads-per-job` CPU threads (default: OMP_NUM_THREADS,
  else the cores divided by the workers; `bench.threads`), so the pool never oversubscribes the cores
  unless told to. submitit's LocalExecutor is
  not used: it has no queue and starts every job at once (submitit #1685, #1718).
- `slurm`: SLURM array jobs through submitit, in the package `bench.slurm`; it shares `Outcome` and
  `save_and_exit` with these two.

`bench.executor_registry` puts the three behind one interface (`Executor.submit`) that `bench.run` looks up by name.

A job whose lock another live process holds (a second `bench.run` on the same results folder, or a
second SLURM attempt) is skipped with a line naming the holder; the jobs waiting for it are skipped
too, without counting as failures. A `local` worker ends when the `bench.run` that started it dies.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.grid import PlannedJob
from bench.jobs import record_lost, request_stages, run_job
from bench.progress import Progress
from bench.spec import RunSettings
from bench.stages import deferring_held_stages, stage_is_held
from bench.store import DONE, FAILED, JOBS_FOLDER, read_status, wait_for_job, write_spec
from bench.threads import available_cores, oversubscription, threads_per_job, use_threads

Printer = Callable[[str], None]


@dataclass
class Outcome:
    """What an executor did: job id -> final or submitted state, and the jobs it could not start."""

    states: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # job id -> why (a dependency failed)
    submitted: list[dict[str, Any]] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # job id -> why another run has it (not a failure)

    @property
    def failed(self) -> int:
        return sum(state == FAILED for state in self.states.values()) + len(self.blocked)


def _write_specs(planned: list[PlannedJob], results: Path, run: RunSettings) -> dict[str, Path]:
    """Every job's spec.json, and the plan's requests to the shared stages its jobs declare."""
    request_stages(results, [job.spec for job in planned])
    return {job.job_id: write_spec(results, job.spec, run) for job in planned}


def _dependency_state(dependency: str, results: Path, outcome: Outcome) -> str:
    if dependency in outcome.blocked:
        return "blocked"
    return outcome.states.get(dependency) or read_status(Path(results) / JOBS_FOLDER / dependency)["state"]


def _ready(job: PlannedJob, results: Path, outcome: Outcome) -> str | None:
    """None if every dependency is done; otherwise the id of one that is not."""
    return next((dep for dep in job.after if _dependency_state(dep, results, outcome) != DONE), None)


def _await_held(job: PlannedJob, waiting_for: str | None, results: Path, outcome: Outcome, echo: Printer) -> str | None:
    """If the dependency `waiting_for` is held by another run, wait for that run to finish it (saying
    so), record its state and return what the job still waits for; else return `waiting_for`."""
    if waiting_for is None or waiting_for not in outcome.held:
        return waiting_for
    echo(f"    {job.job_id} waits for {waiting_for}, which another run holds; waiting for it to finish")
    outcome.held.pop(waiting_for)
    outcome.states[waiting_for] = wait_for_job(Path(results) / JOBS_FOLDER / waiting_for)["state"]
    return _ready(job, results, outcome)


def _skip(job_id: str, waiting_for: str, outcome: Outcome) -> str:
    """Record a job whose dependency is not done (held elsewhere: not a failure); return why."""
    if waiting_for in outcome.held:
        outcome.held[job_id] = f"waits for {waiting_for}, which another run holds"
        return outcome.held[job_id]
    outcome.blocked[job_id] = f"dependency {waiting_for} is not done"
    return outcome.blocked[job_id]


def _note(job_id: str, status: dict[str, Any], outcome: Outcome) -> str | None:
    """Record a finished `run_job`; return the line to print for anything but a fresh success."""
    if "held_by" in status:
        outcome.held[job_id] = f"held by {status['held_by']} (another run is training it)"
        return f"skipped, {outcome.held[job_id]}"
    outcome.states[job_id] = status["state"]
    if status.get("kept"):
        return f"kept as failed ({status.get('error')}); --retry-failed reruns it"
    return None if status["state"] == DONE else f"failed: {status.get('error')}"


def run_inline(planned: list[PlannedJob], results: Path, run: RunSettings, retry_failed: bool = False,
               echo: Printer = print) -> Outcome:
    """Run every job in this process, dependencies first; a job whose dependency failed is skipped."""
    paths = _write_specs(planned, results, run)
    outcome = Outcome()
    progress = Progress(planned, results, retry_failed, echo)
    previous = signal.signal(signal.SIGTERM, save_and_exit)  # `kill`, `timeout`: the last epoch is kept
    try:
        _run_inline_jobs(planned, results, paths, retry_failed, outcome, progress, echo)
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.summary()
    return outcome


def _run_inline_jobs(planned: list[PlannedJob], results: Path, paths: dict[str, Path], retry_failed: bool,
                     outcome: Outcome, progress: Progress, echo: Printer) -> None:
    for job in planned:
        waiting_for = _await_held(job, _ready(job, results, outcome), results, outcome, echo)
        if waiting_for is not None:
            progress.blocked(job, _skip(job.job_id, waiting_for, outcome))
            continue
        if progress.skips(job):
            outcome.states[job.job_id] = progress.skips(job)
            continue
        status = run_job(paths[job.job_id], retry_failed=retry_failed)
        line = _note(job.job_id, status, outcome)
        progress.finished(job, status)
        if line:
            echo(f"    {line}")


def _init_worker(devices: Any, threads: int) -> None:
    """Pool initializer: take one GPU (if any) before torch touches CUDA; share the CPU threads; end
    with the parent (`bench.run`) when it dies, even mid-job (the job resumes from its checkpoint)."""
    signal.signal(signal.SIGTERM, save_and_exit)  # `kill`, the OOM killer's warning: keep the last epoch
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    use_threads(threads)


def _exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """Poll the parent's pid: when this process is re-parented (the parent died), end at once."""
    while os.getppid() == parent:
        time.sleep(interval_s)
    from bench.train import exit_keeping_last_epochs

    exit_keeping_last_epochs(1)  # the job resumes from its last finished epoch


def _run_in_worker(spec_path: str, retry_failed: bool, after: str | None = None, defer: bool = False
                   ) -> dict[str, Any]:
    """Run the job; first wait for the job folder `after` (held by another run) to be released. With
    `defer`, a shared stage that another process is computing ends the job at once (`deferred` in its
    status) instead of waiting for it."""
    if after is not None:
        print(f"    {Path(spec_path).parent.name} waits for {Path(after).name}, which another run holds; waiting "
              "for it to finish", flush=True)
        if wait_for_job(Path(after))["state"] != DONE:
            return {"state": FAILED, "error": f"dependency {Path(after).name} is not done"}
    with deferring_held_stages() if defer else contextlib.nullcontext():
        return run_job(spec_path, retry_failed=retry_failed)


def default_workers() -> int:
    import torch

    return torch.cuda.device_count() or max(1, available_cores() // 2)


def run_local(planned: list[PlannedJob], results: Path, run: RunSettings, workers: int | None = None,
              retry_failed: bool = False, echo: Printer = print, jobs_per_gpu: int = 1,
              threads: int | None = None) -> Outcome:
    """Run the jobs in a pool of worker processes, each with `threads` CPU threads (None: `threads_per_job`'s
    default); each job starts once its dependencies are done."""
    import torch

    gpus = torch.cuda.device_count() if run.device.startswith("cuda") else 0
    slots = gpu_slots(gpus, workers, jobs_per_gpu)
    workers = len(slots) or workers or default_workers()
    context = multiprocessing.get_context("spawn")
    devices = None
    if gpus:
        devices = context.Queue()
        for index in slots:
            devices.put(index)
    if run.device.startswith("cuda:"):  # each worker sees one GPU, as cuda:0
        run = replace(run, device="cuda", progress=False)
    else:
        run = replace(run, progress=False)
    paths = _write_specs(planned, results, run)
    outcome = Outcome()
    threads = threads_per_job(workers, threads)
    sharing = f", {jobs_per_gpu} per GPU" if jobs_per_gpu > 1 else ", one GPU each"
    echo(f"local pool: {workers} worker(s){sharing if gpus else ''}, {threads} CPU thread(s) each")
    crowded = oversubscription(workers, threads)
    if crowded:
        echo(crowded)
    progress = Progress(planned, results, retry_failed, echo)
    outcome.states.update({job.job_id: progress.skips(job) for job in planned if progress.skips(job)})
    waiting = [job for job in planned if not progress.skips(job)]
    by_id = {job.job_id: job for job in planned}
    lost: set[str] = set()  # jobs in flight when a worker died (killed by the OS): run once more, then failed
    deferred: dict[str, Path] = {}  # job id -> the stage folder another process was computing when it met it
    previous = signal.signal(signal.SIGTERM, save_and_exit)  # the workers see this process end and save
    try:
        while waiting or deferred:
            _refill(devices, slots)
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                        initargs=(devices, threads)) as pool:
                running: dict[concurrent.futures.Future, str] = {}
                while waiting or running or deferred:
                    for job_id, stage in list(deferred.items()):  # again once the stage is free, or nothing else runs
                        if not running or not stage_is_held(stage):
                            running[pool.submit(_run_in_worker, str(paths[job_id]), retry_failed, None,
                                                bool(running))] = job_id
                            del deferred[job_id]
                    active = set(running.values()) | {job.job_id for job in waiting}
                    for job in list(waiting):
                        blocking = _ready(job, results, outcome)
                        if blocking is None or blocking in outcome.held:  # a held one: the worker waits for it
                            waits = str(Path(results) / JOBS_FOLDER / blocking) if blocking else None
                            running[pool.submit(_run_in_worker, str(paths[job.job_id]), retry_failed, waits,
                                                workers > 1)] = job.job_id
                            waiting.remove(job)
                        elif blocking not in active:  # failed, blocked, or not in this plan and not done
                            progress.blocked(job, _skip(job.job_id, blocking, outcome))
                            waiting.remove(job)
                    if not running:
                        continue
                    done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                    if any(isinstance(future.exception(), BrokenProcessPool) for future in done):
                        waiting = _lost_workers(running, lost, by_id, paths, outcome, progress, echo) + waiting
                        break
                    for future in done:
                        job_id = running.pop(future)
                        status = future.result()
                        if "deferred" in status:
                            deferred[job_id] = Path(status["deferred"])
                            echo(f"    {job_id} waits for stage {deferred[job_id].name}, which another job is "
                                 "computing; its worker runs another job meanwhile")
                            continue
                        line = _note(job_id, status, outcome)
                        progress.finished(by_id[job_id], status)
                        if line:
                            echo(f"    {line}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.summary()
    return outcome


def _refill(devices: Any, slots: list[int]) -> None:
    """Put every GPU slot (back) in the queue the workers of a new pool take theirs from."""
    if devices is None:
        return
    while not devices.empty():
        devices.get_nowait()
    for index in slots:
        devices.put(index)


def _lost_workers(running: dict[concurrent.futures.Future, str], lost: set[str], by_id: dict[str, PlannedJob],
                  paths: dict[str, Path], outcome: Outcome, progress: Progress, echo: Printer) -> list[PlannedJob]:
    """A worker died (the OS killed it, e.g. out of memory) and took the pool down: the jobs in flight
    run again in a new pool, except those in flight at an earlier death too, which fail. Returns the
    jobs to run again."""
    again = []
    for job_id in running.values():
        if job_id in lost:
            status = record_lost(paths[job_id])
            outcome.states[job_id] = status["state"]
            progress.finished(by_id[job_id], status)
            echo(f"    failed: {status.get('error')}")
        else:
            lost.add(job_id)
            again.append(by_id[job_id])
    echo(f"    a worker process died; running {len(again)} job(s) again in a new pool" if again else
         "    a worker process died")
    return again


def gpu_slots(gpus: int, workers: int | None, jobs_per_gpu: int) -> list[int]:
    """The GPU index of each local worker: `jobs_per_gpu` per GPU (at most `workers` in all), round-robin."""
    count = gpus * jobs_per_gpu if workers is None else min(workers, gpus * jobs_per_gpu)
    return [index % gpus for index in range(count)] if gpus else []


def save_and_exit(signum: int, frame: Any) -> None:
    from bench.train import exit_keeping_last_epochs

    exit_keeping_last_epochs(128 + signum)
