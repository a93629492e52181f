"""`python -m methods._imc_timing RESULTS`: IMC's analysis time, old budget against new, from one run.

Reads the `imc-analysis` records of a results folder (e.g. from `bench/grids/imc-defaults-digits.toml`,
which runs each analysis twice on the same pretrained weights: at IMC's defaults and with
`methods.imc.LEGACY_ANALYSIS_HPARAMS`, the Hessian-vector-product budget before early-stopped SLQ,
Ritz top eigenvalues and the float32 rounding probe: all 8 SLQ runs, PyHessian's power iteration, K
in float32) and prints, per (dataset, arch, trial): s* under each rule, the count and the rule that
decided, K with its diagnostics, SLQ runs, HVPs and the analysis seconds by part, and new / old.
Both analyses must have run in the same process on the same machine for the ratio to mean anything;
the legacy run also measures K's new diagnostics (`lipschitz_diagnostics`), which the old code did
not, so "old without diagnostics" is printed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.cli import guarded
from bench.collect import collect
from bench.errors import BenchError
from methods.imc import LEGACY_ANALYSIS_HPARAMS


def is_legacy(hparams: dict) -> bool:
    return all(hparams.get(key) == value for key, value in LEGACY_ANALYSIS_HPARAMS.items())


def without_legacy(hparams: dict) -> dict:
    """The settings an analysis shares with its old-budget twin."""
    return {key: value for key, value in hparams.items() if key not in LEGACY_ANALYSIS_HPARAMS}


def describe(extra: dict) -> str:
    parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in extra["analysis_parts_s"].items())
    estimate = extra["lipschitz_estimate"]
    return (f"    s*: count {extra['found_sparsity_count']:.3g} (k = {extra['found_count']}, decided by "
            f"{extra['found_rule']}), mass {extra['found_sparsity_mass']:.3g}, nodes {extra['found_sparsity_nodes']:.3g}\n"
            f"    K {estimate['value']:.4g} ({estimate['dtype']}, float32 rounding share "
            f"{estimate.get('float32_rounding_share')}), ||H(W+U) - H(W)|| {estimate['hessian_change']}, "
            f"ReLU flips {estimate['relu_flip_share']}\n"
            f"    SLQ runs {extra['slq_runs_used']}, HVPs {extra['hvps']}, top eigenvalues "
            f"({extra['top_eigenvalues_source']}) {[round(value, 3) for value in extra['top_eigenvalues']]}\n"
            f"    analysis {extra['analysis_s']:.1f} s ({parts})")


@guarded
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m methods._imc_timing", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results folder holding imc-analysis jobs")
    args = parser.parse_args(argv)
    records = collect(args.results).records
    if records.empty or "method" not in records or not (records.method == "imc-analysis").any():
        raise BenchError(f"results folder {args.results} holds no finished imc-analysis job; accepted: a folder "
                         "where `python -m bench.run --grid imc-defaults-digits` has run")
    analyses = records[records.method == "imc-analysis"]
    for (dataset, arch, trial), group in analyses.groupby(["dataset", "arch", "trial"]):
        print(f"{dataset}, {arch}, trial {trial} (device {', '.join(sorted(set(group.device)))})")
        rows = [(json.loads(row.hparams), row.extra) for _, row in group.iterrows()]
        for hparams, extra in rows:
            label = "old budget" if is_legacy(hparams) else "new defaults"
            shared = without_legacy(hparams)
            print(f"  {label}{f' (settings {shared})' if shared else ''}:\n{describe(extra)}")
        for old_hparams, old in rows:
            twins = [extra for hparams, extra in rows if not is_legacy(hparams)
                     and hparams == without_legacy(old_hparams)]
            if is_legacy(old_hparams) and twins:
                new_seconds = twins[0]["analysis_s"]
                diagnostics = old["analysis_parts_s"].get("lipschitz_diagnostics", 0.0)
                print(f"  new / old = {new_seconds / old['analysis_s']:.2f}; new / (old without K's diagnostics) = "
                      f"{new_seconds / (old['analysis_s'] - diagnostics):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
