"""What a SLURM array task runs: the picklable callables submitit sends to the cluster.

A job is a `submitit.helpers.Checkpointable` (`SpecJob`) holding no state but a flag, so on preemption or
timeout submitit requeues it with the same spec path and it resumes from its last epoch (SIGTERM, sent by
`scontrol requeue`, scancel and preemption without a grace signal, writes the last finished epoch and
exits). It raises when the job ends not done, so that SLURM marks it FAILED and `afterok` dependents never
start. With `--jobs-per-gpu N` one array task runs N jobs at once on its GPU (`SpecJobGroup`: one spawned
process per job). Each attempt's log starts with `describe_resume`'s line: which attempt, and which
epoch checkpoints (its own and its shared stages') it resumes from.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import submitit

from bench.atomic import CorruptFileError, load_checked
from bench.executors import save_and_exit
from bench.jobs import run_job, stage_folders
from bench.store import DONE, read_status


class SpecJob(submitit.helpers.Checkpointable):
    """The callable SLURM runs: `SpecJob()(spec_path)`; requeued by submitit with the same path.

    It raises when the job ends failed, so that SLURM marks it FAILED and `afterok` dependents
    never start on a missing analysis.
    """

    def __init__(self, retry_failed: bool = False):
        self.retry_failed = retry_failed

    def __call__(self, spec_path: str) -> str:
        # `scontrol requeue`, scancel and preemption without a grace signal send SIGTERM (submitit ignores
        # it): write the last finished epoch, then exit; the next attempt resumes from it
        signal.signal(signal.SIGTERM, save_and_exit)
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            import torch

            torch.set_num_threads(int(cpus))
        print(describe_resume(Path(spec_path).parent), flush=True)
        status = run_job(spec_path, retry_failed=self.retry_failed)
        if "held_by" in status:  # fail, so that afterok dependents never start before the holder finishes
            raise RuntimeError(f"job {Path(spec_path).parent.name} is held by {status['held_by']}; "
                               "this attempt skips it")
        if status["state"] != DONE:
            raise RuntimeError(f"job {Path(spec_path).parent.name} {status['state']}: {status.get('error')}")
        return status["state"]

    def checkpoint(self, *args, **kwargs):
        """SLURM's requeue signal (preemption, time limit): write the last finished epoch, then requeue."""
        from bench.train import save_pending_checkpoints

        save_pending_checkpoints()
        return super().checkpoint(*args, **kwargs)


def describe_resume(folder: Path) -> str:
    """One log line: which attempt this is and which epoch checkpoints it resumes from, its own and those
    of the shared stages it reads (`<stage folder>/train at epoch 3`)."""
    status = read_status(folder)
    checkpoints = []
    places = [(folder, "")]
    if (folder / "spec.json").exists():
        places += [(stage, f"{stage.name}/") for stage in stage_folders(folder)]
    for place, prefix in places:
        for path in sorted((place / "ckpt").glob("*.pt")):
            if path.name.endswith((".snapshot.pt", ".previous.pt")):
                continue
            try:
                state = load_checked(path)
            except CorruptFileError:  # the trainer sets it aside and says so
                continue
            if state.get("complete"):
                checkpoints.append(f"{prefix}{path.stem} complete")
            elif "next_epoch" in state:  # a training phase's (`bench.train`)
                checkpoints.append(f"{prefix}{path.stem} at epoch {state['next_epoch']}")
            else:  # a method's own (e.g. a search's)
                checkpoints.append(f"{prefix}{path.stem} checkpoint")
    where = f"resuming from {', '.join(checkpoints)}" if checkpoints else "starting from scratch"
    return f"prunebench job {folder.name}: state {status['state']}, attempt {status.get('attempt', 0) + 1}, {where}"


GROUP_CHECKPOINT_TIMEOUT_S = 120


_GROUP: list[multiprocessing.process.BaseProcess] = []
"""The job processes of the running `SpecJobGroup` (not pickled with it: submitit pickles the callable)."""


def _run_grouped(spec_path: str, retry_failed: bool, threads: int) -> None:
    """One job of an array task's group, in its own process: SIGTERM writes its last epoch and exits."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # SLURM's requeue signal is the task's (the parent's) to handle
    signal.signal(signal.SIGTERM, save_and_exit)
    import torch

    torch.set_num_threads(threads)
    print(describe_resume(Path(spec_path).parent), flush=True)
    run_job(spec_path, retry_failed=retry_failed)


class SpecJobGroup(SpecJob):
    """The callable of an array task that runs several jobs at once on its GPU: `SpecJobGroup()(spec_paths)`.

    One spawned process per job shares the task's GPU and CPUs; the task fails (so `afterok` dependents
    wait) if any of its jobs ends not done. On SLURM's requeue signal each process writes the last
    finished epoch of its phase before the task requeues with the same paths.
    """

    def __call__(self, spec_paths: list[str]) -> str:
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.cpu_count() or 1)
        context = multiprocessing.get_context("spawn")
        _GROUP[:] = [context.Process(target=_run_grouped, args=(path, self.retry_failed,
                                                                max(1, cpus // len(spec_paths))))
                     for path in spec_paths]
        for process in _GROUP:
            process.start()
        for process in _GROUP:
            process.join()
        _GROUP.clear()
        states = {Path(path).parent.name: read_status(Path(path).parent) for path in spec_paths}
        failed = {name: f"{status['state']}: {status.get('error')}" for name, status in states.items()
                  if status["state"] != DONE}
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(spec_paths)} jobs of this task not done: {failed}")
        return DONE

    def checkpoint(self, *args, **kwargs):
        for process in _GROUP:
            if process.is_alive():
                process.terminate()
        for process in _GROUP:
            process.join(GROUP_CHECKPOINT_TIMEOUT_S)
        return super().checkpoint(*args, **kwargs)
