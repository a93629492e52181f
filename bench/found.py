"""The sparsity a job asked for as "found": IMC's s* from the same dataset, arch, trial and recipe.

Interface used by the executors: `analysis_spec(spec)` is the job whose success guarantees the analysis
exists (method `imc-analysis`, registered in `methods/imc.py`: pretraining, spectrum, K and gap rule,
no retraining; a SLURM `afterok` dependency, or an earlier phase locally); `found_sparsity(spec,
results)` reads s* from that job's record. The analysis runs with the IMC settings of `spec` when
`spec` is an IMC job (its variants wait for the very analysis they reuse), with `hparams` when given,
and otherwise with the job's `analysis` settings (empty: IMC's defaults, the paper's settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.jobs import DONE, job_dir, read_metrics, read_status
from bench.spec import JobSpec
from methods.imc import analysis_hparams

ANALYSIS_METHOD = "imc-analysis"


def analysis_spec(spec: JobSpec, hparams: dict[str, Any] | None = None) -> JobSpec:
    """The IMC analysis job that a 'found' job of the same dataset, arch and trial depends on."""
    if hparams is None:
        hparams = analysis_hparams(spec.hparams) if spec.method.startswith("imc-") else spec.analysis
    return JobSpec(method=ANALYSIS_METHOD, dataset=spec.dataset, arch=spec.arch, trial=spec.trial,
                   train=dict(spec.train), hparams=dict(hparams), image_size=spec.image_size)


def found_sparsity(spec: JobSpec, results: Path, hparams: dict[str, Any] | None = None) -> float:
    """s* recorded by the finished analysis job of `spec`; a one-line BenchError if it is not done."""
    analysis = analysis_spec(spec, hparams)
    folder = job_dir(results, analysis)
    state = read_status(folder)["state"]
    records = read_metrics(folder) if state == DONE else []
    if not records:
        raise BenchError(
            f"job {spec.job_id} asks for sparsity 'found', but IMC's analysis job {analysis.job_id} is {state} in "
            f"{Path(results)}; accepted: run it first (python -m bench.run --methods {ANALYSIS_METHOD} ...) "
            "or give a float sparsity in [0, 1)"
        )
    return float(records[0]["extra"]["found_sparsity"])
