"""Executors: run a plan of jobs inline, in a bounded local pool, or as SLURM array jobs via submitit.

Every executor hands a job only the path of its `spec.json` (`bench.jobs.run_job`), so a job is
idempotent: finished jobs are skipped, interrupted ones resume from their epoch checkpoints. Before
any job runs, every executor writes the plan's requests to the shared stages its jobs declare
(`bench.jobs.request_stages`: e.g. the rewind epochs the dense trajectory must keep); a stage is then
computed by the first job that needs it, under its lock, and the others load it or wait for it.

- `inline`: this process, in dependency order (IMC's analysis before the jobs at "found").
- `local`: a pool of `--workers` spawned processes, one GPU each where there are GPUs
  (`CUDA_VISIBLE_DEVICES`), or `--jobs-per-gpu N` workers sharing each GPU; a job starts when its
  dependencies are done. Each worker runs `--threads-per-job` CPU threads (default: OMP_NUM_THREADS,
  else the cores divided by the workers; `bench.threads`), so the pool never oversubscribes the cores
  unless told to. submitit's LocalExecutor is
  not used: it has no queue and starts every job at once (submitit #1685, #1718).
- `slurm`: submitit's `AutoExecutor` following `shared/specs/harness-anchors.md` (d) and avoiding
  Hydra's submitit-launcher pitfalls: the submitit folder lives in the results folder; `timeout_min`
  and `slurm_max_num_timeout` are always set; stderr goes to stdout; jobs are submitted as arrays
  with `executor.batch()`, chunked to the cluster's MaxArraySize (submitit #1624);
  `update_parameters` is called outside `batch()`; submission never blocks on results. A job is a
  `submitit.helpers.Checkpointable` (`SpecJob`) holding no state but a flag, so on preemption or
  timeout submitit requeues it with the same spec path and it resumes from its last epoch. Jobs at
  "found" sparsity get `--dependency=afterok:<analysis job>`; jobs sharing the same dependencies share
  one array. Every submission is appended to `jobs.jsonl` for `bench.status`. With `--jobs-per-gpu N`
  one array task runs N jobs at once on its GPU (`SpecJobGroup`: one spawned process per job), and
  `--cuda-mps` starts the CUDA MPS daemon in the allocation so that their kernels share the GPU.

`bench.executor_registry` puts the three behind one interface (`Executor.submit`) that `bench.run` looks up by name.

The job's Python is the submitter's `sys.executable`; the job's working directory and `PYTHONPATH`
are set to this checkout's root (quoted: a path with a space works), so it imports the same code as
the submitter (an editable install elsewhere does not win).

A job whose lock another live process holds (a second `bench.run` on the same results folder, or a
second SLURM attempt) is skipped with a line naming the holder; the jobs waiting for it are skipped
too, without counting as failures. A `local` worker ends when the `bench.run` that started it dies.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import submitit

from bench.atomic import CorruptFileError, load_checked
from bench.data import DataSettings
from bench.errors import BenchError
from bench.grid import PlannedJob
from bench.jobs import record_lost, request_stages, run_job, stage_folders
from bench.progress import Progress
from bench.provenance import REPO_ROOT
from bench.slurm_limits import check_request
from bench.spec import RunSettings
from bench.store import DONE, FAILED, JOBS_FOLDER, PENDING, RUNNING, read_status, wait_for_job, write_spec
from bench.threads import available_cores, oversubscription, threads_per_job, use_threads
from bench.tracking import JobState, append_jobs_log, job_states

DEFAULT_MAX_ARRAY_SIZE = 1000
Printer = Callable[[str], None]


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
        signal.signal(signal.SIGTERM, _save_and_exit)
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
    previous = signal.signal(signal.SIGTERM, _save_and_exit)  # `kill`, `timeout`: the last epoch is kept
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
    signal.signal(signal.SIGTERM, _save_and_exit)  # `kill`, the OOM killer's warning: keep the last epoch
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    use_threads(threads)


def _exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """Poll the parent's pid: when this process is re-parented (the parent died), end at once."""
    while os.getppid() == parent:
        time.sleep(interval_s)
    from bench.train import save_pending_checkpoints

    save_pending_checkpoints()  # the job resumes from its last finished epoch
    os._exit(1)


def _run_in_worker(spec_path: str, retry_failed: bool, after: str | None = None) -> dict[str, Any]:
    """Run the job; first wait for the job folder `after` (held by another run) to be released."""
    if after is not None:
        print(f"    {Path(spec_path).parent.name} waits for {Path(after).name}, which another run holds; waiting "
              "for it to finish", flush=True)
        if wait_for_job(Path(after))["state"] != DONE:
            return {"state": FAILED, "error": f"dependency {Path(after).name} is not done"}
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
    previous = signal.signal(signal.SIGTERM, _save_and_exit)  # the workers see this process end and save
    try:
        while waiting:
            _refill(devices, slots)
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                        initargs=(devices, threads)) as pool:
                running: dict[concurrent.futures.Future, str] = {}
                while waiting or running:
                    active = set(running.values()) | {job.job_id for job in waiting}
                    for job in list(waiting):
                        blocking = _ready(job, results, outcome)
                        if blocking is None or blocking in outcome.held:  # a held one: the worker waits for it
                            waits = str(Path(results) / JOBS_FOLDER / blocking) if blocking else None
                            running[pool.submit(_run_in_worker, str(paths[job.job_id]), retry_failed, waits)] = \
                                job.job_id
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


GROUP_CHECKPOINT_TIMEOUT_S = 120
_GROUP: list[multiprocessing.process.BaseProcess] = []
"""The job processes of the running `SpecJobGroup` (not pickled with it: submitit pickles the callable)."""


def _save_and_exit(signum: int, frame: Any) -> None:
    from bench.train import save_pending_checkpoints

    save_pending_checkpoints()
    os._exit(128 + signum)


def _run_grouped(spec_path: str, retry_failed: bool, threads: int) -> None:
    """One job of an array task's group, in its own process: SIGTERM writes its last epoch and exits."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # SLURM's requeue signal is the task's (the parent's) to handle
    signal.signal(signal.SIGTERM, _save_and_exit)
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


def max_array_size() -> int:
    """The cluster's MaxArraySize (the largest array has MaxArraySize tasks, indices 0..MaxArraySize-1)."""
    if shutil.which("scontrol") is None:
        return DEFAULT_MAX_ARRAY_SIZE
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.MULTILINE)
    return max(1, int(match.group(1)) - 1) if match else DEFAULT_MAX_ARRAY_SIZE


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

    A request that no node of the partition can meet is refused first (`bench.slurm_limits`)."""
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

