"""`--executor slurm` against a real SLURM (tests/slurm/start-cluster.sh): submitit arrays end to end,
requeue and resume, cancel and resubmit, failed jobs, and the `afterok` dependency on IMC's analysis.

Tiny jobs (digits, resnet8, a few epochs, 1 CPU each) so that the module runs in a few minutes on 2
cores. Every check reads the job folders, `jobs.jsonl` and the queue, as a user would.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.slurm.conftest import (
    REPO_ROOT,
    bench,
    queued_ids,
    status_of,
    submissions,
    submit,
    wait_for,
    wait_until_left_queue,
    write_grid,
)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

TINY_GRID = """
methods = ["dense", "magnitude"]
datasets = ["digits"]
archs = ["resnet8"]
trials = 2
sparsities = [0.3, 0.6]
[train]
epochs = 1

[[block]]
name = "ok"

[[block]]
name = "diverges"
methods = ["dense"]
trials = 1
train = { epochs = 1, lr = 1e6 }
"""


def _by_job(results: Path) -> dict[str, dict]:
    return {entry["job_id"]: entry for entry in submissions(results)}


def test_tiny_grid_end_to_end(tmp_path: Path) -> None:
    grid, results = write_grid(tmp_path / "tiny.toml", TINY_GRID), tmp_path / "results"
    started = time.monotonic()
    output = submit(grid, results, "--max-array-size", "4").stdout
    assert time.monotonic() - started < 60, "bench.run must submit and return, not wait for the jobs"
    entries = _by_job(results)
    assert len(entries) == 7, output  # dense x 2 trials + magnitude x 2 trials x 2 sparsities + 1 diverging
    arrays = [entry["slurm_id"].split("_")[0] for entry in entries.values()]
    assert sorted(arrays.count(array) for array in set(arrays)) == [3, 4], "arrays chunked to --max-array-size"
    wait_until_left_queue(results)

    diverging = [job for job in entries if status_of(results, job)["state"] == "failed"]
    assert len(diverging) == 1
    assert json.loads((results / "jobs" / diverging[0] / "spec.json").read_text())["spec"]["train"]["lr"] == 1e6
    for job_id, entry in entries.items():
        if job_id in diverging:
            continue
        folder = results / "jobs" / job_id
        assert status_of(results, job_id)["state"] == "done", (folder / "status.json").read_text()
        records = json.loads((folder / "metrics.json").read_text())
        spec = json.loads((folder / "spec.json").read_text())["spec"]
        assert len(records) == 1 and 0.0 <= records[0]["accuracy"] <= 1.0
        assert records[0]["accuracy"] > 0.2, "a trained resnet8 beats chance (0.1) on digits"
        if spec["method"] == "magnitude":
            assert abs(records[0]["achieved_sparsity"] - spec["sparsity"]) <= 0.005
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["slurm"]["SLURM_JOB_ID"], "the job ran under SLURM"
        assert provenance["code"] == str(REPO_ROOT), "the job imported this checkout's code"
        assert Path(entry["log"]).exists()

    status = bench("bench.status", "--results", str(results)).stdout
    assert status.startswith("7 jobs: 6 done, 1 failed"), status
    assert "diverged" in status and f"log: {entries[diverging[0]]['log']}" in status and "| " in status

    again = submit(grid, results).stdout
    assert "nothing to submit" in again and len(submissions(results)) == 7, "done and failed jobs are not resubmitted"
    retry = submit(grid, results, "--retry-failed").stdout
    assert "submitted 1 job(s)" in retry and submissions(results)[-1]["job_id"] == diverging[0]
    wait_until_left_queue(results)
    assert status_of(results, diverging[0])["attempt"] == 2


# Long enough that the job is still training when SLURM kills it a few seconds after the requeue
# (KillWait plus srun's step timeout), even when epochs take 0.2 s.
REQUEUE_EPOCHS = 80
REQUEUE_GRID = f"""
methods = ["dense"]
datasets = ["digits"]
archs = ["resnet8"]
trials = 1
[train]
epochs = {REQUEUE_EPOCHS}
"""


def test_requeue_resumes_from_checkpoint(tmp_path: Path) -> None:
    """Two interruptions mid-training, each ending with the uninterrupted run's numbers:
    `scontrol requeue` (what an admin or a preemption does) and USR2, submitit's timeout/preemption
    signal, on which `SpecJob.checkpoint` hands submitit the same spec path to requeue."""
    grid = write_grid(tmp_path / "requeue.toml", REQUEUE_GRID)
    plain = tmp_path / "uninterrupted"
    submit(grid, plain)
    interrupts = {"scontrol": ["scontrol", "requeue"], "usr2": ["scancel", "--signal=USR2"]}
    for name in interrupts:
        submit(grid, tmp_path / name)
    for name, command in interrupts.items():
        (entry,) = submissions(tmp_path / name)
        stages = tmp_path / name / "stages"  # the dense job trains the shared dense trajectory

        def mid_training(stages: Path = stages) -> bool:
            logs = list(stages.glob("dense-trajectory-*/epochs.csv"))
            return bool(logs) and len(logs[0].read_text().splitlines()[1:]) >= 3

        wait_for(mid_training, 120, f"three trained epochs before {name}")
        subprocess.run([*command, entry["slurm_id"]], check=True)
        # SLURM holds a requeued batch job for about two minutes (BeginTime); release it at once.
        wait_for(lambda entry=entry: "PD" in subprocess.run(["squeue", "-h", "-j", entry["slurm_id"], "-o", "%t"],
                                                            capture_output=True, text=True).stdout,
                 60, f"the job pending again after {name}")
        subprocess.run(["scontrol", "update", f"JobId={entry['slurm_id']}", "StartTime=now"], check=True)
    wait_until_left_queue(plain)
    reference = json.loads((plain / "jobs" / submissions(plain)[0]["job_id"] / "metrics.json").read_text())[0]
    for name in interrupts:
        wait_until_left_queue(tmp_path / name)
        (entry,) = submissions(tmp_path / name)
        folder = tmp_path / name / "jobs" / entry["job_id"]
        status = status_of(tmp_path / name, entry["job_id"])
        assert status["state"] == "done", (name, status)
        assert status["attempt"] == 2, f"{name}: the first attempt finished before SLURM killed it ({status})"
        log = Path(entry["log"]).read_text()
        assert "attempt 1, starting from scratch" in log, f"{name}: the log keeps every attempt"
        resumed = [line for line in log.splitlines() if "attempt 2" in line]
        assert resumed and "/train at epoch" in resumed[0], (name, log)  # the trajectory's checkpoint
        assert int(resumed[0].rsplit("epoch ", 1)[1]) >= 3, name
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["slurm"]["SLURM_RESTART_COUNT"] == "1", name
        (trajectory,) = (tmp_path / name / "stages").glob("dense-trajectory-*")
        epochs = [line.split(",")[1] for line in (trajectory / "epochs.csv").read_text().splitlines()[1:]]
        assert epochs == [str(epoch) for epoch in range(REQUEUE_EPOCHS)], f"{name}: every epoch logged once"
        ours = json.loads((folder / "metrics.json").read_text())[0]
        assert (ours["accuracy"], ours["test_loss"]) == (reference["accuracy"], reference["test_loss"]), name
    assert "Caught signal SIGUSR2" in Path(submissions(tmp_path / "usr2")[0]["log"]).read_text()


CANCEL_GRID = """
methods = ["dense", "magnitude"]
datasets = ["digits"]
archs = ["resnet8"]
trials = 1
sparsities = [0.5]
[train]
epochs = 2
"""


def test_cancelled_job_is_reported_and_resubmitted(tmp_path: Path) -> None:
    grid, results = write_grid(tmp_path / "cancel.toml", CANCEL_GRID), tmp_path / "results"
    submit(grid, results)
    entries = _by_job(results)
    cancelled = next(job for job in entries if job.startswith("magnitude"))
    subprocess.run(["scancel", entries[cancelled]["slurm_id"]], check=True)
    wait_until_left_queue(results)

    status = bench("bench.status", "--results", str(results)).stdout
    # "cancelled" when squeue still lists the job as CANCELLED or its log says so; a job cancelled while
    # still pending has no log, and once squeue has forgotten it, it can only be reported as "lost"
    assert "1 done" in status and ("1 cancelled" in status or "1 lost" in status), status
    assert any(line.split()[0] in ("cancelled", "lost") and cancelled in line for line in status.splitlines()), status

    again = submit(grid, results).stdout
    assert "submitted 1 job(s)" in again, again
    assert [entry["job_id"] for entry in submissions(results)[2:]] == [cancelled]
    wait_until_left_queue(results)
    assert status_of(results, cancelled)["state"] == "done"
    assert bench("bench.status", "--results", str(results)).stdout.startswith("2 jobs: 2 done")


FOUND_GRID = """
methods = ["magnitude"]
datasets = ["digits"]
archs = ["resnet8"]
trials = 1
sparsities = ["found"]
quick = true
[train]
epochs = 1
"""


def test_found_jobs_wait_for_the_analysis(tmp_path: Path) -> None:
    """Jobs at "found" sparsity get `afterok` on IMC's analysis job and start only after it ends.

    The real `imc-analysis` is used when registered; otherwise the test-only stand-in of
    `tests/stand_ins.py`, which waits a few seconds after training so that a missing dependency would
    let the dependent start on the second CPU while the analysis still runs.
    """
    grid, results = write_grid(tmp_path / "found.toml", FOUND_GRID), tmp_path / "results"
    env = {"PRUNEBENCH_PLUGINS": "tests.stand_ins", "STAND_IN_ANALYSIS_SECONDS": "6"}
    output = submit(grid, results, env=env).stdout
    entries = _by_job(results)
    analysis = next(job for job in entries if job.startswith("imc-analysis"))
    dependent = next(job for job in entries if job.startswith("magnitude"))
    assert entries[dependent]["dependency"] == f"afterok:{entries[analysis]['slurm_id']}", output
    assert entries[dependent]["after"] == [analysis]

    def dependent_waits() -> bool:
        reason = subprocess.run(["squeue", "-h", "-j", entries[dependent]["slurm_id"], "-o", "%r"],
                                capture_output=True, text=True).stdout
        return "Dependency" in reason

    assert dependent_waits() or status_of(results, analysis)["state"] == "done", "held by its dependency"
    wait_until_left_queue(results)
    first, second = status_of(results, analysis), status_of(results, dependent)
    assert first["state"] == "done", first
    assert second["state"] in ("done", "failed") and "started" in second, second
    assert second["started"] >= first["finished"], "the dependent started before the analysis ended"
    assert entries[dependent]["slurm_id"] not in queued_ids()


PAIR_GRID = """
methods = ["dense"]
datasets = ["digits"]
archs = ["resnet8"]
trials = 2
[train]
epochs = 1
"""


def test_jobs_per_gpu_runs_a_group_of_jobs_in_one_array_task(tmp_path: Path) -> None:
    grid, results = write_grid(tmp_path / "pair.toml", PAIR_GRID), tmp_path / "results"
    submit(grid, results, "--jobs-per-gpu", "2", "--cpus-per-job", "2")
    entries = _by_job(results)
    assert len(entries) == 2 and len({entry["slurm_id"] for entry in entries.values()}) == 1, entries
    wait_until_left_queue(results)
    for job_id in entries:
        assert status_of(results, job_id)["state"] == "done", (results / "jobs" / job_id / "status.json").read_text()
