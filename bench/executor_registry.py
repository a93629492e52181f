"""The executors behind one interface: `Executor` and the `EXECUTORS` registry that `bench.run` looks
`--executor NAME` up in.

Each executor (inline and local: `bench.executors`; slurm: the package `bench.slurm`) is called the
same way, `submit(planned, results, run, options)`, and declares the command-line flags only it reads (`flags`)
and the lines refusing other executors' flags that it would ignore (`refused`, `check_packing`,
`check_options`), so that `bench.run` refuses a flag the chosen executor would ignore (one line naming
what to use instead) without naming any executor. A new executor is a subclass registered under its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from bench.errors import BenchError
from bench.executors import Outcome, run_inline, run_local
from bench.grid import PlannedJob
from bench.registry import Registry
from bench.slurm.executor import SlurmSettings, submit_slurm
from bench.spec import RunSettings
from bench.threads import use_threads


@dataclass(frozen=True)
class ExecutorOptions:
    """What the command line gives an executor besides the plan; each executor reads its part."""

    retry_failed: bool = False
    workers: int | None = None  # local: the pool size (None: one per GPU, else half the CPUs)
    threads_per_job: int | None = None  # inline, local: CPU threads of each job (None: bench.threads decides)
    jobs_per_gpu: int = 1  # local: workers per GPU; slurm: jobs per array task
    slurm: SlurmSettings = field(default_factory=SlurmSettings)


class Executor(ABC):
    """Runs or submits a plan of jobs (each job only by the path of its `spec.json`)."""

    flags: ClassVar[tuple[str, ...]] = ()
    """Flags (argparse destinations) that only this executor reads: given to another one, they are an
    error (any changed from its default)."""
    refused: ClassVar[dict[str, str]] = {}
    """Flags of other executors this one would ignore -> the line refusing them (checked before `flags`)."""
    runs_here: ClassVar[bool] = True
    """True: jobs run on this machine (its devices are checked); False: elsewhere (the name is checked)."""
    runs_to_the_end: ClassVar[bool] = True
    """True: `submit` returns once every job has finished (`bench.run` prints the summary); False: once
    the jobs are submitted."""

    def check_packing(self, device: str, jobs_per_gpu: int) -> None:
        """Refuse a `--jobs-per-gpu` this executor would ignore (before any job starts)."""
        if jobs_per_gpu < 1:
            raise BenchError(f"--jobs-per-gpu {jobs_per_gpu}; accepted: an integer >= 1")

    def check_options(self, options: ExecutorOptions) -> None:
        """A one-line `BenchError` for options this executor cannot honour (before any job is written)."""
        return None

    @abstractmethod
    def submit(self, planned: list[PlannedJob], results: Path, run: RunSettings, options: ExecutorOptions) -> Outcome:
        """Run or submit what is not done; what it did."""

    def exit_status(self, outcome: Outcome) -> int:
        """`bench.run`'s exit status: 1 where a job failed or could not start."""
        return 1 if outcome.failed else 0


EXECUTORS: Registry[type[Executor]] = Registry("executor")


@EXECUTORS.register("inline")
class InlineExecutor(Executor):
    """This process, in dependency order (`bench.executors.run_inline`)."""

    refused = {"workers": "--workers sizes the local pool, which --executor inline does not use; accepted: "
                          "--executor local --workers N, or no --workers"}

    def check_packing(self, device: str, jobs_per_gpu: int) -> None:
        super().check_packing(device, jobs_per_gpu)
        if jobs_per_gpu > 1:
            raise BenchError("--jobs-per-gpu needs --executor local or slurm; accepted with inline: 1")

    def submit(self, planned: list[PlannedJob], results: Path, run: RunSettings, options: ExecutorOptions) -> Outcome:
        if options.threads_per_job is not None:
            use_threads(options.threads_per_job)
        return run_inline(planned, results, run, retry_failed=options.retry_failed)


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """A pool of worker processes on this machine (`bench.executors.run_local`)."""

    def check_packing(self, device: str, jobs_per_gpu: int) -> None:
        super().check_packing(device, jobs_per_gpu)
        if jobs_per_gpu > 1 and not device.startswith("cuda"):
            raise BenchError(f"--jobs-per-gpu shares GPUs, but the device is {device}; accepted on the CPU: --workers N")

    def submit(self, planned: list[PlannedJob], results: Path, run: RunSettings, options: ExecutorOptions) -> Outcome:
        return run_local(planned, results, run, workers=options.workers, retry_failed=options.retry_failed,
                         jobs_per_gpu=options.jobs_per_gpu, threads=options.threads_per_job)


@EXECUTORS.register("slurm")
class SlurmExecutor(Executor):
    """SLURM array jobs through submitit (`bench.slurm.executor.submit_slurm`): submits and returns."""

    flags = ("partition", "constraint", "max_array_size", "gpus_per_job", "cpus_per_job", "mem_gb", "time_min",
             "array_parallelism", "slurm_setup", "max_num_timeout", "cuda_mps")
    refused = {"workers": "--workers sizes the local pool; accepted with --executor slurm: --array-parallelism N"}
    runs_here = False
    runs_to_the_end = False

    def check_options(self, options: ExecutorOptions) -> None:
        if options.threads_per_job is not None:
            raise BenchError("--threads-per-job is not used by --executor slurm; accepted there: --cpus-per-job N "
                             "(each job runs that many threads)")

    def submit(self, planned: list[PlannedJob], results: Path, run: RunSettings, options: ExecutorOptions) -> Outcome:
        outcome = submit_slurm(planned, results, run, options.slurm, retry_failed=options.retry_failed)
        for job_id, why in outcome.blocked.items():
            print(f"not submitted: {job_id}: {why}")
        print(f"{len(outcome.submitted)} job(s) submitted, {len(planned)} in the plan; "
              f"watch: python -m bench.status --results {results}")
        return outcome

    def exit_status(self, outcome: Outcome) -> int:
        """1 where a job could not be submitted (failed jobs left as they are do not count)."""
        return 1 if outcome.blocked else 0


def executor_flags() -> dict[str, str]:
    """Every executor's own flags -> the executor that reads them, in registration order."""
    return {flag: name for name in EXECUTORS.names() for flag in EXECUTORS.get(name).flags}
