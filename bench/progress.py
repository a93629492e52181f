"""Progress of a run: one line per job an executor is done with, and a closing count.

A line names the job (method, requested sparsity, dataset, arch, trial), its outcome (accuracy and
achieved sparsity of its last round, or the error), its seconds, and how many jobs are left with an
ETA (wall time so far per finished job, times the jobs left: it holds for a worker pool too). Jobs
already done when the run starts are skipped and counted as skipped, never rerun; failed ones are
kept (and counted) unless `--retry-failed`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.grid import PlannedJob
from bench.store import DONE, FAILED, JOBS_FOLDER, read_metrics, read_status

SKIPPED_DONE, KEPT_FAILED, BLOCKED = "skipped as done", "kept failed", "blocked"


def duration(seconds: float) -> str:
    """12.3 -> '12s', 250 -> '4m10s', 7384 -> '2h03m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def job_label(job: PlannedJob) -> str:
    spec = job.spec
    level = "—" if spec.sparsity is None else (spec.sparsity if isinstance(spec.sparsity, str) else f"{spec.sparsity:g}")
    return f"{spec.method} sparsity {level} ({spec.dataset}, {spec.arch}, trial {spec.trial})"


class Progress:
    """Counts the jobs of a plan as an executor reports them, and prints one line for each."""

    def __init__(self, planned: list[PlannedJob], results: Path, retry_failed: bool = False,
                 echo: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic):
        self.results = Path(results)
        self.echo, self.clock = echo, clock
        self.total = len(planned)
        self.counts: dict[str, int] = {}
        self.before: dict[str, str] = {}
        kept_lines = []
        for job in planned:
            status = read_status(self.results / JOBS_FOLDER / job.job_id)
            state = status["state"]
            if state == DONE or (state == FAILED and not retry_failed):
                self.before[job.job_id] = state
            if state == FAILED and not retry_failed:
                error = str(status.get("error") or "no reason recorded").splitlines()[0][:160]
                kept_lines.append(f"kept as failed ({error}): {job.job_id}; --retry-failed reruns it")
        self.to_run = self.total - len(self.before)
        self.ran = 0
        self.started = clock()
        skipped = sum(state == DONE for state in self.before.values())
        kept = len(self.before) - skipped
        parts = [f"{self.to_run} to run"] + ([f"{skipped} {SKIPPED_DONE}"] if skipped else []) + (
            [f"{kept} {KEPT_FAILED} (--retry-failed reruns them)"] if kept else [])
        self._print(f"{self.total} jobs: {', '.join(parts)}")
        for line in kept_lines:
            self._print(line)
        for state in self.before.values():
            self._count(SKIPPED_DONE if state == DONE else KEPT_FAILED)

    def skips(self, job: PlannedJob) -> str | None:
        """The state the job already had if it is not to be run (done, or failed and kept), else None."""
        return self.before.get(job.job_id)

    def blocked(self, job: PlannedJob, why: str) -> None:
        self.ran += 1
        self._count(BLOCKED)
        self._print(f"[{self.ran}/{self.to_run}] blocked {job_label(job)}: {why} | {self._left()}")

    def finished(self, job: PlannedJob, status: dict[str, Any]) -> None:
        self.ran += 1
        state = status["state"]
        self._count(state)
        seconds = status.get("seconds") or (status.get("finished", 0) - status.get("started", 0))
        if state == DONE:
            records = read_metrics(self.results / JOBS_FOLDER / job.job_id)
            outcome = _record_text(records[-1], len(records)) if records else "no record"
        else:
            outcome = str(status.get("error", "")).splitlines()[0][:160] if status.get("error") else state
        self._print(f"[{self.ran}/{self.to_run}] {state:6s} {job_label(job)}: {outcome}, "
                    f"{duration(seconds)} | {self._left()}")

    def summary(self) -> str:
        counts = ", ".join(f"{count} {state}" for state, count in self.counts.items())
        line = f"{self.total} jobs: {counts or 'none'}; {duration(self.clock() - self.started)}"
        self._print(line)
        return line

    def _left(self) -> str:
        left = self.to_run - self.ran
        if left == 0:
            return "0 left"
        per_job = (self.clock() - self.started) / max(self.ran, 1)
        return f"{left} left, ETA {duration(per_job * left)}"

    def _count(self, state: str) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1

    def _print(self, line: str) -> None:
        self.echo(line)
        sys.stdout.flush()


def _record_text(record: dict[str, Any], rounds: int) -> str:
    from bench.tables import number

    text = f"accuracy {100 * record['accuracy']:.2f}%, achieved sparsity {number(record['achieved_sparsity'], 3)}"
    return text + (f" (round {record['round']}, {rounds} records)" if rounds > 1 else "")
