"""The sparsity a job asked for as "found": the s* recorded by the found-sparsity analysis of the same
dataset, arch, trial and recipe.

The harness names no method here: the registry holds exactly one method that declares
`provides_found` (the paper's IMC registers its analysis so). `analysis_spec(spec)` is the job whose
success guarantees the analysis exists (a SLURM `afterok` dependency, or an earlier phase locally);
`found_sparsity(spec, results)` reads s* (`extra.found_sparsity`) from that job's record. The analysis
runs with the settings of `spec` when its method declares `reuses_found_analysis` (IMC's variants wait
for the very analysis they reuse; `found_analysis_hparams` keeps the settings that choose it), with
`hparams` when given, and otherwise with the job's `analysis` settings (empty: the analysis' defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.spec import JobSpec
from bench.store import DONE, job_dir, read_metrics, read_status
from methods.registry import found_provider, get_method


def analysis_spec(spec: JobSpec, hparams: dict[str, Any] | None = None) -> JobSpec:
    """The analysis job that a 'found' job of the same dataset, arch and trial depends on."""
    provider = found_provider()
    if hparams is None:
        method_class = get_method(spec.method)
        shares = method_class.reuses_found_analysis or method_class.provides_found
        hparams = method_class.found_analysis_hparams(spec.hparams) if shares else spec.analysis
    return JobSpec(method=provider.name, dataset=spec.dataset, arch=spec.arch, trial=spec.trial,
                   train=dict(spec.train), hparams=dict(hparams), image_size=spec.image_size)


def found_sparsity(spec: JobSpec, results: Path, hparams: dict[str, Any] | None = None) -> float:
    """s* recorded by the finished analysis job of `spec`; a one-line BenchError if it is not done."""
    analysis = analysis_spec(spec, hparams)
    folder = job_dir(results, analysis)
    state = read_status(folder)["state"]
    records = read_metrics(folder) if state == DONE else []
    if not records:
        raise BenchError(
            f"job {spec.job_id} asks for sparsity 'found', but the analysis job {analysis.job_id} is {state} in "
            f"{Path(results)}; accepted: run it first (python -m bench.run --methods {analysis.method} ...) "
            "or give a float sparsity in [0, 1)"
        )
    return float(records[0]["extra"]["found_sparsity"])
