"""CPU threads per job: jobs running side by side never ask for more threads than the cores, unless told to.

PyTorch starts one intra-op thread per core in every process; N worker processes on C cores then run
N x C threads that preempt each other (issue 19: a job taking 1 s inline took 38 s in a 2-worker pool).
Each job therefore gets `--threads-per-job` threads, else `OMP_NUM_THREADS` (the user's own cap), else
the cores this process may use divided by the jobs running at once, at least 1. SLURM jobs get their
allocation's `SLURM_CPUS_PER_TASK` (`--cpus-per-job`) divided the same way. Each job's provenance.json
records the thread count it ran with (`bench.provenance`).
"""

from __future__ import annotations

import os

from bench.errors import BenchError


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, e.g. under SLURM or taskset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def threads_per_job(jobs_at_once: int, requested: int | None = None, cores: int | None = None) -> int:
    """Threads for each of `jobs_at_once` jobs: `requested`, else OMP_NUM_THREADS, else cores // jobs (>= 1)."""
    if requested is not None:
        if requested < 1:
            raise BenchError(f"--threads-per-job {requested}; accepted: an integer >= 1")
        return requested
    from_environment = os.environ.get("OMP_NUM_THREADS", "").strip()
    if from_environment:
        try:
            value = int(from_environment)
        except ValueError:
            value = 0
        if value < 1:
            raise BenchError(f"OMP_NUM_THREADS={from_environment!r}; accepted: an integer >= 1 (or unset)")
        return value
    return max(1, (cores or available_cores()) // max(1, jobs_at_once))


def oversubscription(jobs_at_once: int, threads: int, cores: int | None = None) -> str | None:
    """A line saying that `jobs_at_once` x `threads` exceed the cores (None when they fit)."""
    cores = cores or available_cores()
    if jobs_at_once * threads <= cores:
        return None
    return (f"note: {jobs_at_once} jobs x {threads} threads = {jobs_at_once * threads} threads on {cores} cores "
            "(as asked by --threads-per-job or OMP_NUM_THREADS); they will slow each other down")


def use_threads(threads: int) -> None:
    """Set this process's intra-op threads (before the job's first tensor operation)."""
    import torch

    torch.set_num_threads(threads)
