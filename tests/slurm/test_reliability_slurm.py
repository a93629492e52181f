"""Issue 10 against the real cluster: a request no node can meet is refused at submission (class 7),
and a second SLURM attempt skips a job whose lock another process holds (class 3)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bench.grid import load_grid
from bench.spec import RunSettings
from bench.store import job_dir, job_lock, write_spec
from tests.slurm.conftest import bench, status_of, submissions, submit, wait_until_left_queue, write_grid

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

TINY = """
methods = ["dense"]
datasets = ["digits@300"]
archs = ["resnet8"]
[train]
epochs = 1
"""


def _largest_node_cpus() -> int:
    output = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True, check=True).stdout
    return max(int(count) for count in re.findall(r"CPUTot=(\d+)", output))


def test_more_cpus_than_any_node_is_refused_in_one_line(tmp_path: Path) -> None:
    cpus = _largest_node_cpus()
    grid, results = write_grid(tmp_path / "tiny.toml", TINY), tmp_path / "results"
    refused = bench("bench.run", "--grid", str(grid), "--results", str(results), "--executor", "slurm",
                    "--cpus-per-job", str(cpus + 2), "--mem-gb", "1", "--time-min", "10")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip() == (
        f"error: --cpus-per-job {cpus + 2} is more than any node of partition debug has ({cpus} CPUs); SLURM would "
        f"keep the jobs pending for ever; accepted: --cpus-per-job 1..{cpus}")
    assert not (results / "jobs.jsonl").exists() and not (results / "jobs").exists()

    too_much_memory = bench("bench.run", "--grid", str(grid), "--results", str(results), "--executor", "slurm",
                            "--cpus-per-job", "1", "--mem-gb", "100000", "--time-min", "10")
    assert too_much_memory.returncode == 2 and "--mem-gb 100000 is more than any node" in too_much_memory.stderr


def test_a_second_attempt_skips_a_job_whose_lock_is_held(tmp_path: Path) -> None:
    grid, results = write_grid(tmp_path / "tiny.toml", TINY), tmp_path / "results"
    (job,) = load_grid(str(grid)).plan()
    folder = job_dir(results, job.spec)
    write_spec(results, job.spec, RunSettings(device="cpu"))
    with job_lock(folder) as holder:  # this test process is "the first attempt"
        assert holder is None
        submit(grid, results)
        wait_until_left_queue(results)
    log = Path(submissions(results)[-1]["log"]).read_text()
    assert "is held by pid" in log and "this attempt skips it" in log, log
    assert not list(results.glob("**/epochs.csv")) and status_of(results, job.job_id)["state"] == "pending"

    again = submit(grid, results).stdout  # the holder is gone: the job runs, once
    assert "submitted 1 job(s)" in again
    wait_until_left_queue(results)
    assert status_of(results, job.job_id)["state"] == "done"
    (log_path,) = results.glob("**/epochs.csv")  # the dense job's run is the shared dense trajectory
    rows = log_path.read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in rows] == [["train", "0"]]
