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
from bench.paper import ANALYSIS_ONLY, IMC_ROWS, METHOD_ORDER, display_name, paper_row, paper_sparsity
from bench.spec import FOUND

METRICS = {  # column: (record field, scale, decimals)
    "Sparsity": ("achieved_sparsity", 1.0, 2),
    "Accuracy": ("accuracy", 100.0, 1),
    "Epoch": ("epochs", 1.0, 0),
    "Runtime (s)": ("runtime_s", 1.0, 0),
}
PAPER_FIELDS = {"Sparsity": "sparsity", "Accuracy": "accuracy", "Epoch": "epochs", "Runtime (s)": "runtime_s"}
ROUNDING = 1e-12
"""A spread this small relative to the values is float rounding, not a difference between trials."""


def method_order(methods) -> list[str]:
    """The paper's row order, then other methods by name; analysis-only jobs have no row."""
    present = [name for name in dict.fromkeys(methods) if name not in ANALYSIS_ONLY]
    return [name for name in METHOD_ORDER if name in present] + sorted(set(present) - set(METHOD_ORDER))


def found_sparsity_by_trial(records: pd.DataFrame) -> dict[int, float]:
    """IMC's s* per trial: the achieved sparsity of its records (all variants share one analysis)."""
    imc = records[records.method.isin(IMC_ROWS) & (records.level == "none")]  # not the paper-level jobs
    return imc.groupby("trial").achieved_sparsity.mean().to_dict()


def nearest_per_job(rows: pd.DataFrame, target: pd.Series) -> pd.DataFrame:
    """One row per (method, trial) of `rows`: the one whose achieved sparsity is nearest its `target`
    (the first on a tie), or the group's last row where the target is NaN. Vectorised: a report of 10,000
    jobs makes one pass, not one frame per job."""
    if rows.empty:
        return rows
    position = pd.Series(range(len(rows)), index=rows.index, dtype=float)
    key = (rows.achieved_sparsity - target).abs().where(target.notna(), -position)
    chosen = key.groupby([rows.method, rows.trial], sort=False).idxmin()
    return rows.loc[chosen.to_numpy()]


def _per_job(records: pd.DataFrame, values: pd.Series, how: str) -> pd.Series:
    """`values` aggregated over each (method, trial) with `how` and broadcast back to its rows."""
    return values.groupby([records.method, records.trial], sort=False).transform(how)


def found_rows(records: pd.DataFrame) -> pd.DataFrame:
    """One record per (method, trial) for the "accuracy with found sparsity" table: the job at `found`,
    else the method's own (level none), else an iterative method's round nearest that trial's s*."""
    target = records.trial.map(found_sparsity_by_trial(records)).astype(float)
    level_rank = records.level.map({FOUND: 0, "none": 1}).fillna(2)
    best_rank = _per_job(records, level_rank, "min")
    iterative = _per_job(records, records["round"], "nunique") > 1
    eligible = (level_rank == best_rank) & ((best_rank < 2) | (target.notna() & iterative))
    return nearest_per_job(records[eligible], target[eligible])


ROUND_TOLERANCE = 0.05
"""How far (in sparsity) an iterative method's nearest round may be from a level and still stand for it."""


def rows_at_level(records: pd.DataFrame, target: float, round_tolerance: float | None = None) -> pd.DataFrame:
    """One record per (method, trial) at sparsity `target`: the jobs that ran at that level (their nearest
    round), an iterative method's nearest round (within `round_tolerance`, if given) and the dense control."""
    at_level = records.level == f"{target:g}"
    has_level = _per_job(records, at_level, "any")
    iterative = _per_job(records, records["round"], "nunique") > 1
    dense = _per_job(records, (records.level == "none") & (records.achieved_sparsity == 0.0), "all")
    distance = (records.achieved_sparsity - target).abs()
    near = pd.Series(True, index=records.index) if round_tolerance is None else \
        _per_job(records, distance, "min") <= round_tolerance
    eligible = at_level | (~has_level & iterative & near) | (~has_level & ~iterative & dense)
    targets = pd.Series(target, index=records.index).where(~(~has_level & ~iterative & dense))
    return nearest_per_job(records[eligible], targets[eligible])


def paper_rows(records: pd.DataFrame) -> pd.DataFrame:
    """One record per (method, trial) at the paper's s* of the records' (dataset, arch): the jobs that
    ran there (an iterative method's nearest round), and the dense control; empty where the paper has
    no table for this (dataset, arch)."""
    first = records.iloc[0]
    try:
        target = paper_sparsity(first.dataset, first.arch)
    except BenchError:
        return records.iloc[0:0]
    return rows_at_level(records, target)


def best_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Per method, the records of the sweep point (level, round) with the highest mean accuracy."""
    chosen = []
    for _, group in records.groupby("method", sort=False):
        means = group.groupby(["level", "round"]).accuracy.mean()
        level, round_index = means.idxmax()
        chosen.append(group[(group.level == level) & (group["round"] == round_index)])
    return pd.concat(chosen) if chosen else records.iloc[0:0]


def spread(values: pd.Series) -> float:
    """The sample std of `values` (NaN for one value), 0 where it is float rounding (the same sparsity
    summed in another order gives 0.39999852341858133 and 0.3999985234185813: "± 6.8e-17" would be noise)."""
    if len(values) < 2:
        return math.nan
    std = float(values.std(ddof=1))
    return 0.0 if std <= ROUNDING * max(1.0, float(values.abs().max())) else std


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and n per method of every metric, plus compression, FLOPs and device."""
    out = []
    for method in method_order(rows.method):
        group = rows[rows.method == method]
        entry = {"method": method, "n": len(group)}
        for column, (field, scale, _) in METRICS.items():
            values = group[field].astype(float) * scale
            entry[f"{column} mean"] = values.mean()
            entry[f"{column} std"] = spread(values)
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
        row = {"Method": display_name(entry.method)}
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
