"""A run goes on, and keeps its work, whatever happens to one of its jobs or to itself (issue 18):
SIGTERM keeps the last finished epoch (inline and local, as SLURM's requeue does), a worker killed by
the OS fails its job alone, an immutable job folder fails its job alone, plan.json is extended under a
lock, a job waiting for another run's analysis trains once that run finishes it, and a stage lock
held elsewhere is said, not waited on in silence.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.atomic import load_checked
from bench.executors import run_inline
from bench.grid import PlannedJob
from bench.jobs import _run_locked
from bench.plans import record_plan, recorded_jobs
from bench.spec import RunSettings
from bench.stages import StageSpec, obtain, stage_lock
from bench.store import DONE, FAILED, job_dir, job_lock, read_status, write_spec
from tests.conftest import TINY_ARCH, tiny_dense

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN = RunSettings(device="cpu", progress=False)


def start(results: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "bench.run", "--methods", "dense", "--dataset", "digits@300", "--arch", TINY_ARCH,
               "--device", "cpu", "--results", str(results), *extra]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def epoch_rows(results: Path) -> int:
    logs = list(results.glob("stages/*/epochs.csv"))
    return max(0, len(logs[0].read_text().splitlines()) - 1) if logs else 0


def wait_for_epochs(results: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while epoch_rows(results) < count:
        assert process.poll() is None and time.time() < deadline, "the run never trained its epochs"
        time.sleep(0.2)


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_sigterm_keeps_the_last_finished_epoch(executor, tmp_path):
    results = tmp_path / "results"
    process = start(results, "--epochs", "400", "--executor", executor, *(["--workers", "1"] if executor == "local" else []))
    wait_for_epochs(results, 3, process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    time.sleep(2)  # a local worker notices its parent is gone within a second, saves, then exits
    (checkpoint,) = results.glob("stages/*/ckpt/train.pt")
    rows = epoch_rows(results)
    assert 3 <= load_checked(checkpoint)["next_epoch"] <= rows  # the default interval (300 s) would keep none


def test_a_worker_killed_by_the_os_does_not_end_the_run(tmp_path):
    results = tmp_path / "results"
    process = start(results, "--epochs", "12", "--trials", "2", "--executor", "local", "--workers", "1")
    wait_for_epochs(results, 2, process)
    (lock,) = [path for path in results.glob("jobs/*/lock") if path.read_text().strip()]
    os.kill(int(lock.read_text().split()[1]), signal.SIGKILL)  # what the OOM killer does
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output
    assert "a worker process died; running" in output and "job(s) again in a new pool" in output
    states = [read_status(folder)["state"] for folder in (results / "jobs").iterdir()]
    assert states == [DONE, DONE]


@pytest.mark.skipif(shutil.which("chattr") is None or os.geteuid() != 0, reason="needs chattr as root")
def test_an_immutable_job_folder_fails_that_job_only(tmp_path, capsys):
    frozen, other = tiny_dense(), tiny_dense(trial=1)
    folder = write_spec(tmp_path, frozen, RUN).parent
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        outcome = run_inline([PlannedJob(frozen), PlannedJob(other)], tmp_path, RUN)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert outcome.states == {frozen.job_id: FAILED, other.job_id: DONE}
    assert "cannot be written" in capsys.readouterr().out


def _record_many(results: str, index: int) -> None:
    for step in range(10):
        record_plan(Path(results), f"grid-{index}-{step}", {}, [PlannedJob(tiny_dense(trial=index * 10 + step))])


def test_plan_json_keeps_every_run_of_processes_writing_at_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_record_many, args=(str(tmp_path), index)) for index in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert len(recorded_jobs(tmp_path)) == 40


def test_a_job_waiting_for_an_analysis_another_run_holds_trains_once_it_is_done(tmp_path, capsys):
    analysis, dependent = tiny_dense(), tiny_dense(trial=1)
    path = write_spec(tmp_path, analysis, RUN)
    held = threading.Event()

    def other_run() -> None:  # another bench.run: it holds the analysis job and trains it
        with job_lock(path.parent):
            held.set()
            time.sleep(1.0)
            _run_locked(path, path.parent, read_status(path.parent))

    thread = threading.Thread(target=other_run)
    thread.start()
    held.wait(30)
    outcome = run_inline([PlannedJob(analysis), PlannedJob(dependent, (analysis.job_id,))], tmp_path, RUN)
    thread.join()
    assert read_status(job_dir(tmp_path, dependent))["state"] == DONE and outcome.failed == 0
    assert "which another run holds; waiting for it to finish" in capsys.readouterr().out


def test_a_stage_lock_held_elsewhere_is_said_before_waiting(tmp_path, capsys):
    stage = StageSpec("probe", {"what": "lock"})
    held = threading.Event()

    def holder() -> None:
        with stage_lock(stage.folder(tmp_path)):
            held.set()
            time.sleep(1.0)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(30)
    result = obtain(tmp_path, stage, lambda _: {"seconds": 0.0})
    thread.join()
    assert result.computed_here
    assert f"waiting for stage {stage.label}: another process is computing it" in capsys.readouterr().err
