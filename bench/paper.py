"""The paper's published numbers (tables 6-13 of the supplement), transcribed once into
`bench/paper/tables6-13.csv`: one row per (table, method, arch) with sparsity, accuracy (%), epochs
and runtime (s). `kind` is "found" (accuracy with IMC's found sparsity, tables 6, 8, 10, 12) or "best"
(sparsity with highest accuracy, tables 7, 9, 11, 13)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

from bench.errors import BenchError

PAPER_TABLES = Path(__file__).parent / "paper" / "tables6-13.csv"

METHOD_ORDER = (
    "dense", "flow-prune", "snip", "synflow", "lth-reinit", "lth-rewind", "lth-finetune", "grasp",
    "sanity-check", "continuous-sparsification", "imc-reinit", "imc-rewind", "imc-finetune",
)
BASELINE = METHOD_ORDER[0]
"""The paper's Baseline row (the dense network): the control line of every figure."""
IMC_ROWS = METHOD_ORDER[-3:]
"""The paper's three IMC rows (its variants): their s* is the report's found sparsity."""
ANALYSIS_ONLY = ("imc-analysis", "imc-lipschitz")
"""Jobs that analyse without retraining (IMC's shared analysis, the K sweep): no row in the tables."""
PAPER_NAMES = dict(zip(METHOD_ORDER, (
    "Baseline", "Flow&Prune", "SNIP", "SynFlow", "LTH+Reinitialization", "LTH+Rewinding", "LTH+FineTuning",
    "GraSP", "sanity-check", "Continuous Sparsification", "IMC-Reinitialization", "IMC-Rewinding",
    "IMC-FineTuning"), strict=True))
DISPLAY_NAMES = PAPER_NAMES | {"gmp": "GMP", "set": "SET", "rigl": "RigL"}
"""How tables and figures name a method: the paper's row names, and the names the sparse-training papers
use for the methods beyond the paper (Zhu & Gupta's gradual magnitude pruning, Mocanu et al.'s SET, Evci
et al.'s RigL). Any other method (a plugin, an ablation such as `snip (shuffle)`) keeps its own name."""


def display_name(method: str) -> str:
    return DISPLAY_NAMES.get(method, method)


@cache
def paper_tables() -> pd.DataFrame:
    return pd.read_csv(PAPER_TABLES, dtype={"dataset": str})


@cache
def _paper_rows() -> dict[tuple[str, str, str, str], dict]:
    """The paper's rows by (kind, dataset, arch, method), the first where one repeats."""
    rows: dict[tuple[str, str, str, str], dict] = {}
    for row in paper_tables().to_dict("records"):
        rows.setdefault((row["kind"], row["dataset"], row["arch"], row["method"]), row)
    return rows


def paper_row(kind: str, dataset: str, arch: str, method: str) -> dict | None:
    """The paper's numbers for one cell row, or None where the paper has no such table or row."""
    row = _paper_rows().get((kind, dataset, arch, method))
    return None if row is None else dict(row)


def paper_table_number(kind: str, dataset: str) -> int | None:
    table = paper_tables()
    match = table[(table.kind == kind) & (table.dataset == dataset)]
    return None if match.empty else int(match.table.iloc[0])


PAPER_SPARSITY_METHOD = IMC_ROWS[0]
"""Whose row gives the paper's s* in its "accuracy with found sparsity" tables (the three IMC variants
report the same s* in every table)."""


def paper_sparsity(dataset: str, arch: str) -> float:
    """The s* the paper reports for IMC on (dataset, arch): the `paper` sparsity level of grids and the
    CLI; one line listing the pairs the paper has, if it has no table for this one."""
    table = paper_tables()
    found = table[(table.kind == "found") & (table.method == PAPER_SPARSITY_METHOD)]
    match = found[(found.dataset == dataset) & (found.arch == arch)]
    if match.empty:
        pairs = ", ".join(f"{row.dataset}/{row.arch}" for row in found.itertuples())
        raise BenchError(f"the paper reports no found sparsity for {dataset}/{arch}; accepted (dataset/arch): {pairs}")
    return float(match.sparsity.iloc[0])
