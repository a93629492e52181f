"""The sparsity a job asked for as "found": IMC's s* from the same trial (wired by the IMC issue)."""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.spec import JobSpec


def found_sparsity(spec: JobSpec, results: Path) -> float:
    raise BenchError(
        f"job {spec.job_id} asks for sparsity 'found', but no method that finds sparsity is installed yet; "
        "accepted: a float in [0, 1)"
    )
