"""The sparsity a job asked for as "found": IMC's s* from the same trial (wired by the IMC issue).

Interface used by the executors: `analysis_spec(spec)` is the job whose success guarantees the analysis
exists (a SLURM `afterok` dependency, or an earlier phase locally); `found_sparsity(spec, results)` reads
it.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.spec import JobSpec


def analysis_spec(spec: JobSpec) -> JobSpec:
    """The IMC analysis job that a 'found' job of the same dataset, arch and trial depends on."""
    return JobSpec(method="imc-analysis", dataset=spec.dataset, arch=spec.arch, trial=spec.trial, train=spec.train)


def found_sparsity(spec: JobSpec, results: Path) -> float:
    raise BenchError(
        f"job {spec.job_id} asks for sparsity 'found', but no method that finds sparsity is installed yet; "
        "accepted: a float in [0, 1)"
    )
