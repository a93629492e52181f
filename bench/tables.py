"""The paper's two tables per (dataset, arch), built from the tidy records, beside the paper's numbers.

1. "Accuracy with found sparsity": IMC finds s* per trial; methods that ran at `found` report those
   jobs, methods that find their own sparsity (IMC, dense) their own record, and an iterative method
   (LTH) the round whose achieved sparsity is nearest that trial's s*.
2. "Sparsity with highest accuracy": each method's sweep points (requested sparsity x round) are
   averaged over trials and the point with the highest mean accuracy is shown.
3. "Accuracy at the paper's sparsity": every method at the s* the paper reports for IMC on this
   (dataset, arch) (the grids' `paper` level; IMC's variants prune there with their own mask, LTH shows
   its nearest round, the dense control its own record), beside the paper's "found" row of the same
   method: the one comparison with the paper at the same operating point, whatever s* our IMC finds.

Cells are mean ± sample std over trials (n in its own column); accuracy is in percent. Where the paper
has the table, each cell carries the paper's value: `74.1 ± 0.3 (paper 74.1)`.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.errors import BenchError
from bench.paper import ANALYSIS_ONLY, IMC_ROWS, METHOD_ORDER, PAPER_NAMES, paper_row, paper_sparsity
from bench.spec import FOUND

METRICS = {  # column: (record field, scale, decimals)
    "Sparsity": ("achieved_sparsity", 1.0, 2),
    "Accuracy": ("accuracy", 100.0, 1),
    "Epoch": ("epochs", 1.0, 0),
    "Runtime (s)": ("runtime_s", 1.0, 0),
}
PAPER_FIELDS = {"Sparsity": "sparsity", "Accuracy": "accuracy", "Epoch": "epochs", "Runtime (s)": "runtime_s"}


def method_order(methods) -> list[str]:
    """The paper's row order, then other methods by name; analysis-only jobs have no row."""
    present = [name for name in dict.fromkeys(methods) if name not in ANALYSIS_ONLY]
    return [name for name in METHOD_ORDER if name in present] + sorted(set(present) - set(METHOD_ORDER))


def found_sparsity_by_trial(records: pd.DataFrame) -> dict[int, float]:
    """IMC's s* per trial: the achieved sparsity of its records (all variants share one analysis)."""
    imc = records[records.method.isin(IMC_ROWS) & (records.level == "none")]  # not the paper-level jobs
    return imc.groupby("trial").achieved_sparsity.mean().to_dict()


def _nearest_round(group: pd.DataFrame, target: float | None) -> pd.DataFrame:
    if len(group) == 1 or target is None:
        return group.tail(1)
    return group.loc[[(group.achieved_sparsity - target).abs().idxmin()]]


def found_rows(records: pd.DataFrame) -> pd.DataFrame:
    """One record per (method, trial) for the "accuracy with found sparsity" table."""
    s_star = found_sparsity_by_trial(records)
    chosen = []
    for (_, trial), group in records.groupby(["method", "trial"], sort=False):
        target = s_star.get(trial)
        for level in (FOUND, "none"):
            at_level = group[group.level == level]
            if not at_level.empty:
                chosen.append(_nearest_round(at_level, target))
                break
        else:
            if target is not None and group["round"].nunique() > 1:  # iterative: nearest round
                chosen.append(_nearest_round(group, target))
    return pd.concat(chosen) if chosen else records.iloc[0:0]


def paper_rows(records: pd.DataFrame) -> pd.DataFrame:
    """One record per (method, trial) at the paper's s* of the records' (dataset, arch): the jobs that
    ran there (an iterative method's nearest round), and the dense control; empty where the paper has
    no table for this (dataset, arch)."""
    first = records.iloc[0]
    try:
        target = paper_sparsity(first.dataset, first.arch)
    except BenchError:
        return records.iloc[0:0]
    chosen = []
    for _, group in records.groupby(["method", "trial"], sort=False):
        at_level = group[group.level == f"{target:g}"]
        if not at_level.empty:
            chosen.append(_nearest_round(at_level, target))
        elif group["round"].nunique() > 1:
            chosen.append(_nearest_round(group, target))
        elif (group.level == "none").all() and (group.achieved_sparsity == 0.0).all():
            chosen.append(group.tail(1))  # the dense control
    return pd.concat(chosen) if chosen else records.iloc[0:0]


def best_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Per method, the records of the sweep point (level, round) with the highest mean accuracy."""
    chosen = []
    for _, group in records.groupby("method", sort=False):
        means = group.groupby(["level", "round"]).accuracy.mean()
        level, round_index = means.idxmax()
        chosen.append(group[(group.level == level) & (group["round"] == round_index)])
    return pd.concat(chosen) if chosen else records.iloc[0:0]


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and n per method of every metric, plus compression, FLOPs and device."""
    out = []
    for method in method_order(rows.method):
        group = rows[rows.method == method]
        entry = {"method": method, "n": len(group)}
        for column, (field, scale, _) in METRICS.items():
            values = group[field].astype(float) * scale
            entry[f"{column} mean"] = values.mean()
            entry[f"{column} std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        entry["Compression"] = group.compression.mean()
        entry["FLOPs (% dense)"] = 100.0 * (group.flops / group.dense_flops).mean()
        entry["Device"] = ", ".join(sorted(set(group.device)))
        out.append(entry)
    return pd.DataFrame(out)


def with_paper(summary: pd.DataFrame, kind: str, dataset: str, arch: str) -> pd.DataFrame:
    """Add the paper's value of every metric (NaN where the paper has none)."""
    summary = summary.copy()
    for column, paper_field in PAPER_FIELDS.items():
        values = []
        for method in summary.method:
            row = paper_row(kind, dataset, arch, method)
            values.append(float(row[paper_field]) if row is not None else math.nan)
        summary[f"{column} paper"] = values
    return summary


def number(value: float, decimals: int) -> str:
    """`value` with `decimals` decimals, or in scientific notation where that would show 0 (2e-05, not 0.00)."""
    if 0 < abs(value) < 0.5 * 10**-decimals:  # e.g. IMC's s* of 2e-5 is not "0.00"
        return f"{value:.1e}"
    return f"{value:,.{decimals}f}"


def _cell(mean: float, std: float, paper: float, decimals: int) -> str:
    if math.isnan(mean):
        return "—"
    text = number(mean, decimals)
    if not math.isnan(std):
        text += f" ± {number(std, decimals)}"
    if not math.isnan(paper):
        text += f" (paper {number(paper, decimals)})"
    return text


def formatted(summary: pd.DataFrame) -> pd.DataFrame:
    """The table as a reader sees it, in the paper's row order and column layout."""
    rows = []
    for _, entry in summary.iterrows():
        row = {"Method": PAPER_NAMES.get(entry.method, entry.method)}
        for column, (_, _, decimals) in METRICS.items():
            row[column] = _cell(entry[f"{column} mean"], entry[f"{column} std"],
                                entry.get(f"{column} paper", math.nan), decimals)
        row["n"] = int(entry.n)
        row["Compression"] = f"{entry.Compression:.2f}x"
        row["FLOPs (% dense)"] = f"{entry['FLOPs (% dense)']:.1f}"
        row["Device"] = entry.Device
        rows.append(row)
    return pd.DataFrame(rows)


TABLE_KINDS = {  # kind: (how rows are chosen, which of the paper's tables sits beside them)
    "found": (found_rows, "found"),
    "best": (best_rows, "best"),
    "paper": (paper_rows, "found"),
}


def build_tables(records: pd.DataFrame) -> dict[tuple[str, str, str], pd.DataFrame]:
    """{(dataset, arch, kind): numeric summary with paper columns} for every (dataset, arch) present."""
    tables = {}
    records = records[~records.method.isin(ANALYSIS_ONLY)]
    for (dataset, arch), group in records.groupby(["dataset", "arch"], sort=True):
        for kind, (select, paper_kind) in TABLE_KINDS.items():
            chosen = select(group)
            if not chosen.empty:
                tables[(dataset, arch, kind)] = with_paper(summarise(chosen), paper_kind, dataset, arch)
    return tables
