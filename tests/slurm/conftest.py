"""Fixtures of the `slurm` tests: a running cluster (tests/slurm/start-cluster.sh), bench CLIs in
subprocesses, and polling helpers.

Without `sbatch` on PATH, or with a cluster that does not answer, the tests are skipped with the
reason and the command that starts one; under CI (`CI` set) they fail instead, so CI never skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START = "sudo bash tests/slurm/start-cluster.sh"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"slurm tests must run in CI, but {reason}", pytrace=False)
    pytest.skip(f"{reason}; start a one-node cluster with: {START}")


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The node name of a running cluster with an idle (or busy, but up) node."""
    if shutil.which("sbatch") is None:
        _unavailable("no sbatch on PATH")
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as error:
        _unavailable(f"sinfo failed ({error})")
    if not any(state.strip().rstrip("*") in ("idle", "mixed", "allocated") for state in states.splitlines()):
        _unavailable(f"no SLURM node is up (sinfo: {states.strip() or 'nothing'})")
    return states


def bench(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m <args>` from the repository root (the way a user runs it), output captured."""
    environment = os.environ | (env or {})
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=environment, capture_output=True,
                            text=True, timeout=timeout)
    return result


def submit(grid: Path, results: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = bench("bench.run", "--grid", str(grid), "--results", str(results), "--executor", "slurm",
                   "--cpus-per-job", "1", "--mem-gb", "1", "--time-min", "10", *extra, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{squeue_text()}")


def squeue_text() -> str:
    return subprocess.run(["squeue", "-t", "all"], capture_output=True, text=True).stdout


def submissions(results: Path) -> list[dict[str, Any]]:
    path = results / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def status_of(results: Path, job_id: str) -> dict[str, Any]:
    path = results / "jobs" / job_id / "status.json"
    return json.loads(path.read_text()) if path.exists() else {"state": "pending"}


def queued_ids() -> set[str]:
    output = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout
    return {line.strip() for line in output.splitlines()}


def wait_until_left_queue(results: Path, timeout: float = 150) -> None:
    """Wait until no job submitted into `results` is pending or running."""
    def gone() -> bool:
        ids = queued_ids()
        return not any(entry["slurm_id"] in ids for entry in submissions(results))

    wait_for(gone, timeout, f"the jobs of {results} to leave the queue", interval=1)


def write_grid(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
