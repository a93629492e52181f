"""Inline and local executors: dependency order, blocked dependents, reruns that skip finished work,
failed jobs retried only on request, and `bench.status` on what they leave on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import found, jobs, store
from bench.errors import BenchError
from bench.executors import run_inline, run_local
from bench.grid import PlannedJob, load_grid, plan_jobs
from bench.spec import FOUND, JobSpec, RunSettings
from bench.status import main as status_main

RUN = RunSettings(device="cpu", progress=False)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny in-process jobs run fastest on one thread, above all on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(method: str, sparsity: float | str | None = None, trial: int = 0, **train) -> JobSpec:
    return JobSpec(method, "digits", "resnet8", trial=trial, sparsity=sparsity, train={"epochs": 1, **train})


def status(results: Path, spec: JobSpec) -> dict:
    return store.read_status(store.job_dir(results, spec))


def test_inline_runs_the_analysis_first_and_blocks_on_its_failure(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    analysis_lr = {0: 0.1, 1: 1e6}  # trial 1's analysis diverges
    monkeypatch.setattr(found, "analysis_spec", lambda spec: tiny("dense", trial=spec.trial,
                                                                  lr=analysis_lr[spec.trial]))
    monkeypatch.setattr(jobs, "resolve_sparsity", lambda spec, method_class, results: (
        0.4 if spec.sparsity == FOUND else spec.sparsity))
    plan = plan_jobs([tiny("magnitude", FOUND, trial=0), tiny("magnitude", FOUND, trial=1)])
    assert [job.spec.method for job in plan] == ["dense", "dense", "magnitude", "magnitude"]
    outcome = run_inline(plan, tmp_path, RUN, echo=lambda line: None)
    ok, blocked = plan[2], plan[3]
    assert outcome.states[plan[0].job_id] == "done" and outcome.states[plan[1].job_id] == "failed"
    assert outcome.states[ok.job_id] == "done" and blocked.job_id in outcome.blocked
    assert status(tmp_path, ok.spec)["started"] >= status(tmp_path, plan[0].spec)["finished"]
    record = json.loads((store.job_dir(tmp_path, ok.spec) / "metrics.json").read_text())[0]
    assert abs(record["achieved_sparsity"] - 0.4) <= 0.005
    assert status(tmp_path, blocked.spec)["state"] == "pending", "a blocked job is not marked failed"

    again = run_inline(plan, tmp_path, RUN, echo=lambda line: None)
    assert again.states[plan[1].job_id] == "failed" and status(tmp_path, plan[1].spec)["attempt"] == 1
    retried = run_inline(plan, tmp_path, RUN, retry_failed=True, echo=lambda line: None)
    assert status(tmp_path, plan[1].spec)["attempt"] == 2 and blocked.job_id in retried.blocked


def test_local_pool_runs_dependencies_first_and_skips_finished_jobs(tmp_path: Path) -> None:
    first, second = tiny("dense"), tiny("magnitude", 0.5)
    plan = [PlannedJob(first), PlannedJob(second, after=(first.job_id,)), PlannedJob(tiny("dense", trial=1))]
    lines: list[str] = []
    outcome = run_local(plan, tmp_path, RUN, workers=2, echo=lines.append)
    assert set(outcome.states.values()) == {"done"} and len(outcome.states) == 3, lines
    assert status(tmp_path, second)["started"] >= status(tmp_path, first)["finished"]
    assert lines[0].startswith("local pool: 2 worker(s)")
    stamps = {job.job_id: status(tmp_path, job.spec)["finished"] for job in plan}
    run_local(plan, tmp_path, RUN, workers=2, echo=lambda line: None)
    assert stamps == {job.job_id: status(tmp_path, job.spec)["finished"] for job in plan}, "done jobs are skipped"


def test_a_job_that_meets_a_stage_being_computed_gives_its_worker_to_another_job(tmp_path: Path) -> None:
    """Trial 0's dense trajectory is being computed elsewhere (this test holds its lock): its job stops at the
    stage, left as it was, and trial 1's job runs meanwhile; once the lock is free, trial 0's runs (first
    attempt), not a worker waiting on the lock."""
    import threading
    import time

    from bench.jobs import train_settings_for
    from bench.stages import stage_lock
    from bench.trajectory import trajectory_stage

    waiting, other = tiny("dense"), tiny("dense", trial=1)
    held, released = threading.Event(), threading.Event()

    def holder() -> None:
        with stage_lock(trajectory_stage(waiting, train_settings_for(waiting)).folder(tmp_path)):
            held.set()
            deadline = time.time() + 300
            while status(tmp_path, other)["state"] != "done" and time.time() < deadline:
                time.sleep(0.1)
        released.set()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(30)
    lines: list[str] = []
    outcome = run_local([PlannedJob(waiting), PlannedJob(other)], tmp_path, RUN, workers=2, echo=lines.append)
    thread.join()
    assert released.is_set() and set(outcome.states.values()) == {"done"}, lines
    assert any(f"{waiting.job_id} waits for stage dense-trajectory-" in line for line in lines), lines
    assert status(tmp_path, waiting)["started"] >= status(tmp_path, other)["finished"]
    assert status(tmp_path, waiting)["attempt"] == 1


def test_status_reports_done_failed_and_unsubmitted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grid_path = tmp_path / "g.toml"
    grid_path.write_text('methods = ["dense"]\ndatasets = ["digits"]\narchs = ["resnet8"]\ntrials = 3\n'
                         "[train]\nepochs = 1\n")
    plan = load_grid(str(grid_path)).plan()
    diverging = PlannedJob(tiny("dense", lr=1e6))
    run_inline([plan[0], diverging], tmp_path, RUN, echo=lambda line: None)
    assert status_main(["--results", str(tmp_path), "--grid", str(grid_path)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("3 jobs: 1 done, 2 not submitted"), shown
    assert status_main(["--results", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("2 jobs: 1 done, 1 failed") and "diverged" in shown and "    | " in shown, shown


def test_jobs_per_gpu_slots_and_flags_that_would_be_ignored(tmp_path: Path) -> None:
    from bench.executors import gpu_slots
    from bench.run import main as run_main
    from bench.slurm.executor import SlurmSettings, mps_setup

    assert gpu_slots(2, None, 3) == [0, 1, 0, 1, 0, 1] and gpu_slots(2, 3, 4) == [0, 1, 0]
    assert gpu_slots(0, None, 4) == [] and gpu_slots(1, None, 1) == [0]
    assert mps_setup(SlurmSettings()) == []
    assert any(line.startswith("nvidia-cuda-mps-control -d") for line in mps_setup(SlurmSettings(cuda_mps=True)))
    base = ["--methods", "dense", "--dataset", "digits", "--arch", "resnet8", "--results", str(tmp_path)]
    assert run_main([*base, "--device", "cpu", "--executor", "local", "--jobs-per-gpu", "2"]) == 2
    assert run_main([*base, "--device", "cpu", "--executor", "local", "--cuda-mps"]) == 2
    assert run_main([*base, "--device", "cpu", "--jobs-per-gpu", "0"]) == 2
    assert not (tmp_path / "jobs").exists(), "refused before any job started"


def test_an_array_task_runs_its_group_of_jobs_in_processes(tmp_path: Path) -> None:
    """`SpecJobGroup` (what one SLURM array task runs with --jobs-per-gpu 2), called as submitit would."""
    from bench.slurm.tasks import SpecJobGroup

    specs = [tiny("dense"), tiny("dense", trial=1)]
    paths = [str(store.write_spec(tmp_path, spec, RUN)) for spec in specs]
    assert SpecJobGroup()(paths) == store.DONE
    for spec in specs:
        assert status(tmp_path, spec)["state"] == store.DONE
        assert json.loads((store.job_dir(tmp_path, spec) / "metrics.json").read_text())[0]["epochs"] == 1
    failing = tiny("dense", lr=1e12)
    with pytest.raises(RuntimeError, match="1 of 2 jobs of this task not done"):
        SpecJobGroup()([paths[0], str(store.write_spec(tmp_path, failing, RUN))])


def test_local_workers_share_the_cores_and_record_their_threads(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """2 workers on this machine's cores never run more threads in all than the cores (issue 19); an explicit
    --threads-per-job and OMP_NUM_THREADS are honoured; each job's provenance.json records its threads."""
    from bench.threads import available_cores, threads_per_job

    def recorded_threads(results: Path, specs: list[JobSpec]) -> list[int]:
        return [json.loads((store.job_dir(results, spec) / "provenance.json").read_text())["threads"]
                for spec in specs]

    specs = [tiny("dense", trial=0), tiny("dense", trial=1)]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the spawned workers inherit the environment
    lines: list[str] = []
    run_local([PlannedJob(spec) for spec in specs], tmp_path / "default", RUN, workers=2, echo=lines.append)
    threads = recorded_threads(tmp_path / "default", specs)
    assert sum(threads) <= max(2, available_cores()) and threads == [max(1, available_cores() // 2)] * 2, lines
    assert not any(line.startswith("note:") for line in lines)

    run_local([PlannedJob(spec) for spec in specs], tmp_path / "asked", RUN, workers=2, threads=3, echo=lines.append)
    assert recorded_threads(tmp_path / "asked", specs) == [3, 3]
    assert any(line.startswith("note: 2 jobs x 3 threads") for line in lines) or available_cores() >= 6
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_per_job(2, cores=64) == 1, "OMP_NUM_THREADS is the user's cap"
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(BenchError, match="OMP_NUM_THREADS='many'; accepted"):
        threads_per_job(2)
    with pytest.raises(BenchError, match="--threads-per-job 0; accepted"):
        threads_per_job(2, 0)


def test_every_executor_is_registered_and_names_real_flags() -> None:
    """`bench.run` looks the executor up by name; the flags each declares (its own, and those it refuses)
    are flags of `bench.run`, so the check of ignored flags cannot miss one through a misspelling."""
    from bench.executor_registry import EXECUTORS, Executor
    from bench.run import build_parser

    assert EXECUTORS.names() == ["inline", "local", "slurm"]
    destinations = set(vars(build_parser().parse_args([])))
    for name in EXECUTORS.names():
        executor = EXECUTORS.get(name)
        assert issubclass(executor, Executor)
        assert set(executor.flags) | set(executor.refused) <= destinations, name
    assert not EXECUTORS.get("slurm").runs_here and not EXECUTORS.get("slurm").runs_to_the_end
