"""The `slurm` executor: a plan submitted as SLURM array jobs through submitit, returning without waiting.

It follows `shared/specs/harness-anchors.md` (d) and avoids Hydra's submitit-launcher pitfalls: the
submitit folder lives in the results folder; `timeout_min` and `slurm_max_num_timeout` are always set;
stderr goes to stdout; jobs are submitted as arrays with `executor.batch()`, chunked to the cluster's
MaxArraySize (submitit #1624; `bench.slurm.limits`); `update_parameters` is called outside `batch()`;
submission never blocks on results. Each array task runs `bench.slurm.tasks.SpecJob` (or `SpecJobGroup`
with `--jobs-per-gpu N`, and `--cuda-mps` starts the CUDA MPS daemon in the allocation so that their
kernels share the GPU). Jobs at "found" sparsity get `--dependency=afterok:<analysis job>`; jobs sharing
the same dependencies share one array. Every submission is appended to `jobs.jsonl` for `bench.status`.
A request that no node of the partition can meet is refused before anything is submitted.

The job's Python is the submitter's `sys.executable`; the job's working directory and `PYTHONPATH`
are set to this checkout's root (quoted: a path with a space works), so it imports the same code as
the submitter (an editable install elsewhere does not win).
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit

from bench.data import DataSettings
from bench.errors import BenchError
from bench.executors import Outcome, Printer
from bench.grid import PlannedJob
from bench.jobs import request_stages
from bench.provenance import REPO_ROOT
from bench.slurm.limits import check_request, max_array_size
from bench.slurm.tasks import SpecJob, SpecJobGroup
from bench.spec import RunSettings
from bench.store import DONE, FAILED, PENDING, RUNNING, write_spec
from bench.tracking import JobState, append_jobs_log, job_states


@dataclass(frozen=True)
class SlurmSettings:
    """What `--executor slurm` asks the cluster for (one job = one task on one node)."""

    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    mem_gb: float = 16
    time_min: int = 240
    array_parallelism: int = 256
    setup: tuple[str, ...] = ()
    constraint: str | None = None
    max_num_timeout: int = 3
    max_array_size: int | None = None  # None: read MaxArraySize from `scontrol show config`
    job_name: str = "prunebench"
    jobs_per_gpu: int = 1  # jobs one array task runs at once on its GPU (or its CPUs)
    cuda_mps: bool = False  # start the CUDA MPS daemon inside each allocation


def submit_tasks(executor: submitit.AutoExecutor, paths: list[Path], retry_failed: bool, jobs_per_task: int
                 ) -> list[submitit.Job]:
    """Submit `paths` (inside `executor.batch()`) as array tasks of `jobs_per_task` jobs each; returns the
    task of every path."""
    if jobs_per_task == 1:
        return [executor.submit(SpecJob(retry_failed), str(path)) for path in paths]
    tasks = []
    for start in range(0, len(paths), jobs_per_task):
        group = [str(path) for path in paths[start:start + jobs_per_task]]
        tasks.extend([executor.submit(SpecJobGroup(retry_failed), group)] * len(group))
    return tasks


def mps_setup(settings: SlurmSettings) -> list[str]:
    """sbatch lines that start the CUDA MPS control daemon for this allocation (its own pipe and log folder)."""
    if not settings.cuda_mps:
        return []
    folder = "${TMPDIR:-/tmp}/prunebench-mps-${SLURM_JOB_ID}"
    return [f"export CUDA_MPS_PIPE_DIRECTORY={folder}/pipe CUDA_MPS_LOG_DIRECTORY={folder}/log",
            'mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"',
            'nvidia-cuda-mps-control -d || echo "prunebench: CUDA MPS did not start; jobs share the GPU without it" >&2']


def slurm_executor(results: Path, settings: SlurmSettings) -> submitit.AutoExecutor:
    """An AutoExecutor on SLURM with every parameter set explicitly (none left to submitit's defaults)."""
    if shutil.which("sbatch") is None:
        raise BenchError("--executor slurm needs SLURM's sbatch on PATH; accepted here: --executor inline or local "
                         "(tests/slurm/start-cluster.sh starts a one-node cluster)")
    folder = Path(results).resolve() / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=settings.max_num_timeout)
    root = shlex.quote(str(REPO_ROOT))
    setup = [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}", f"cd {root}", *settings.setup,
             *mps_setup(settings)]
    parameters: dict[str, Any] = {
        "name": settings.job_name,
        "timeout_min": settings.time_min,
        "cpus_per_task": settings.cpus_per_job,
        "mem_gb": settings.mem_gb,
        "tasks_per_node": 1,
        "nodes": 1,
        "stderr_to_stdout": True,
        "slurm_array_parallelism": settings.array_parallelism,
        "slurm_setup": setup,
    }
    if settings.gpus_per_job:
        parameters["gpus_per_node"] = settings.gpus_per_job
    if settings.partition:
        parameters["slurm_partition"] = settings.partition
    if settings.constraint:
        parameters["slurm_constraint"] = settings.constraint
    executor.update_parameters(**parameters)
    return executor


def submit_slurm(planned: list[PlannedJob], results: Path, run: RunSettings, settings: SlurmSettings,
                 retry_failed: bool = False, echo: Printer = print) -> Outcome:
    """Submit what is not done, queued or (without `retry_failed`) failed; return without waiting.

    A request that no node of the partition can meet is refused first (`bench.slurm.limits`)."""
    check_request(settings.partition, settings.cpus_per_job, settings.mem_gb, settings.gpus_per_job, settings.time_min)
    results = Path(results).resolve()
    run = replace(run, data=_absolute(run.data), progress=False)
    states = job_states(results, [job.job_id for job in planned])
    outcome = Outcome(states={job_id: state.state for job_id, state in states.items()})
    to_submit = [job for job in planned if states[job.job_id].needs_submission
                 or (retry_failed and states[job.job_id].state == FAILED)]
    for job in planned:
        if states[job.job_id].state == FAILED and job not in to_submit:
            echo(f"kept as failed: {job.job_id} ({states[job.job_id].reason}); --retry-failed reruns it")
    to_submit.sort(key=lambda job: bool(job.after))  # every independent job in the first arrays
    if not to_submit:
        echo("nothing to submit: every job is done, queued or failed (rerun failed ones with --retry-failed)")
        return outcome
    request_stages(results, [job.spec for job in planned])
    executor = slurm_executor(results, settings)
    chunk = settings.max_array_size or max_array_size()
    slurm_ids = {job_id: state.slurm_id for job_id, state in states.items() if state.state in (PENDING, RUNNING)}
    submitting = {job.job_id for job in to_submit}
    groups: dict[tuple[str, ...], list[PlannedJob]] = {}
    for job in to_submit:  # the plan lists dependencies first, so their ids are known when needed
        key = _dependency_key(job, states, slurm_ids, submitting, outcome)
        if key is None:
            continue
        if any(slurm_ids.get(dep) is None and dep in submitting for dep in job.after):
            # a dependency submitted in this call: flush the groups so far to learn its SLURM id
            _submit_groups(executor, groups, results, run, retry_failed, chunk, slurm_ids, outcome, echo,
                           settings.jobs_per_gpu)
            groups = {}
            key = _dependency_key(job, states, slurm_ids, submitting, outcome)
            if key is None:
                continue
        groups.setdefault(key, []).append(job)
    _submit_groups(executor, groups, results, run, retry_failed, chunk, slurm_ids, outcome, echo, settings.jobs_per_gpu)
    return outcome


def _dependency_key(job: PlannedJob, states: dict[str, JobState], slurm_ids: dict[str, str | None],
                    submitting: set[str], outcome: Outcome) -> tuple[str, ...] | None:
    """The SLURM ids this job must wait for (afterok), or None (recorded as blocked) if one failed."""
    key = []
    for dep in job.after:
        dep_state = states[dep].state if dep in states else None
        if dep_state == DONE:
            continue
        if dep in submitting or dep_state in (PENDING, RUNNING):
            key.append(slurm_ids.get(dep) or f"?{dep}")
            continue
        outcome.blocked[job.job_id] = f"dependency {dep} is {dep_state or 'not in this plan'}"
        return None
    return tuple(key)


def _submit_groups(executor: submitit.AutoExecutor, groups: dict[tuple[str, ...], list[PlannedJob]],
                   results: Path, run: RunSettings, retry_failed: bool, chunk: int,
                   slurm_ids: dict[str, str | None], outcome: Outcome, echo: Printer, jobs_per_task: int = 1) -> None:
    for dependency, jobs in groups.items():
        additional = {"dependency": "afterok:" + ":".join(dependency)} if dependency else {}
        # append: a requeued job keeps the log of its earlier attempts (the signal, the traceback)
        executor.update_parameters(slurm_additional_parameters={"open-mode": "append", **additional})
        for start in range(0, len(jobs), chunk * jobs_per_task):
            part = jobs[start:start + chunk * jobs_per_task]
            paths = [write_spec(results, job.spec, run) for job in part]
            with executor.batch():
                submitted = submit_tasks(executor, paths, retry_failed, jobs_per_task)
            entries = []
            for job, slurm_job, path in zip(part, submitted, paths, strict=True):
                slurm_ids[job.job_id] = slurm_job.job_id
                outcome.states[job.job_id] = PENDING
                entries.append({"job_id": job.job_id, "slurm_id": slurm_job.job_id, "folder": str(path.parent),
                                "log": str(slurm_job.paths.stdout), "submitit_folder": str(slurm_job.paths.folder),
                                "after": list(job.after), "dependency": additional.get("dependency", ""),
                                "submitted": time.time()})
            append_jobs_log(results, entries)
            outcome.submitted.extend(entries)
            array_id = submitted[0].job_id.split("_")[0]
            echo(f"submitted {len(part)} job(s) as array {array_id}"
                 + (f" after {additional['dependency']}" if additional else ""))


def _absolute(data: DataSettings) -> DataSettings:
    """Data paths made absolute: the job runs in the checkout's root, not the submitter's folder."""
    changes = {name: str(Path(value).expanduser().resolve()) for name in ("data_root", "cache_dir")
               if (value := getattr(data, name)) is not None}
    return replace(data, **changes)
