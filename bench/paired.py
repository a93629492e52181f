"""Paired statistics over trials: which accuracy differences between methods are real.

Every method of one trial shares the init, the data order and the augmentation (`bench.seeds`), so
trials are *paired*: the per-trial difference between two methods carries far less noise than either
accuracy. For every comparison point (dataset, arch, sparsity level) this module gives

- each method's per-trial accuracy difference to the dense control and to a reference method (IMC's
  variants by default), with its mean, the 95% Student-t interval over the trials both methods ran
  (`mean ± t(0.975, n-1) · sd / sqrt(n)`, sd the sample standard deviation of the differences) and
  whether the interval excludes 0. A trial that one of the two lacks leaves the pair out and is named;
  with fewer than two paired trials no interval exists and the row says so (its bounds are NaN).
- a ranking: methods by mean accuracy; a method's rank is 1 + the number of methods whose paired
  interval against it lies wholly above 0 (so methods that no interval separates share a rank), and
  each row names the methods it cannot be told apart from.

Comparison points follow the tables (`bench.tables`): every requested sparsity level of the records
(an iterative method at its nearest round, the dense control at its own record), the paper's s* where
its jobs ran, and `found` (IMC's s* per trial). An iterative method's round counts at a level only
where it is within `ROUND_TOLERANCE` of it, so an LTH run of 2 rounds is not compared at 0.9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.paper import ANALYSIS_ONLY, BASELINE, IMC_ROWS, display_name
from bench.spec import FOUND
from bench.tables import ROUND_TOLERANCE, found_rows, method_order, rows_at_level

CONFIDENCE = 0.95
DIFFERENCE_COLUMNS = ["dataset", "arch", "level", "method", "against", "n", "mean", "ci_low", "ci_high",
                      "excludes_zero", "left_out_trials"]
RANKING_COLUMNS = ["dataset", "arch", "level", "rank", "method", "n", "accuracy", "ci_low", "ci_high",
                   "tied_with"]


@dataclass(frozen=True)
class Interval:
    """Mean and two-sided `CONFIDENCE` Student-t interval of paired differences (NaN bounds for n < 2)."""

    n: int
    mean: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def t_interval(values: list[float] | pd.Series) -> Interval:
    """The mean of `values` and its t-interval over them (as paired differences, one per trial)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return Interval(n, mean, math.nan, math.nan)
    from scipy.special import stdtrit  # here, not at the top: its 0.3-0.5 s import then overlaps the figures

    half = stdtrit(n - 1, 0.5 + CONFIDENCE / 2) * values.std(ddof=1) / math.sqrt(n)
    return Interval(n, mean, mean - half, mean + half)


def comparison_points(records: pd.DataFrame) -> dict[tuple[str, str, str], pd.DataFrame]:
    """{(dataset, arch, level): one record per (method, trial)} for every level the records ran at."""
    points = {}
    records = records[~records.method.isin(ANALYSIS_ONLY)]
    for (dataset, arch), group in records.groupby(["dataset", "arch"], sort=True):
        numeric = sorted({level for level in group.level if level not in ("none", FOUND)}, key=float)
        for level in numeric:
            points[(dataset, arch, level)] = rows_at_level(group, float(level), ROUND_TOLERANCE)
        if (group.level == FOUND).any():
            points[(dataset, arch, FOUND)] = found_rows(group)
    return {key: rows for key, rows in points.items() if rows.method.nunique() > 1}


Accuracies = dict[tuple[str, str, str], dict[str, dict[int, float]]]
"""{(dataset, arch, level): {method: {trial: accuracy (%)}}}: what every paired comparison reads."""


def accuracy_by_trial(rows: pd.DataFrame) -> dict[str, dict[int, float]]:
    """{method: {trial: accuracy (%)}} of one comparison point (dicts: a report of 10,000 jobs compares
    them thousands of times)."""
    return {method: (group.groupby("trial").accuracy.last() * 100.0).to_dict()
            for method, group in rows.groupby("method")}


def trial_accuracies(records: pd.DataFrame) -> Accuracies:
    """Every comparison point's accuracies by method and trial; `differences` and `ranking` take it, so a
    report that needs both computes it once."""
    return {key: accuracy_by_trial(point) for key, point in comparison_points(records).items()}


def paired_difference(mine: dict[int, float], theirs: dict[int, float]) -> tuple[Interval, list[int]]:
    """The interval of `mine - theirs` over the trials both have, and the trials only one has."""
    left_out = sorted(set(mine).symmetric_difference(theirs))
    return (t_interval([value - theirs[trial] for trial, value in mine.items() if trial in theirs]),
            [int(trial) for trial in left_out])


def references_present(methods, reference: str | None) -> list[str]:
    """The methods every other is compared with besides dense: `reference`, or IMC's variants present."""
    if reference is not None:
        return [reference] if reference in methods else []
    return [name for name in IMC_ROWS if name in methods]


def differences(records: pd.DataFrame, reference: str | None = None,
                accuracies: Accuracies | None = None) -> pd.DataFrame:
    """Every method's paired difference (percentage points) to dense and to the reference(s), per point
    (from `accuracies`, the records' `trial_accuracies`, where the caller has them)."""
    rows = []
    for (dataset, arch, level), accuracy in (trial_accuracies(records) if accuracies is None else accuracies).items():
        for against in [BASELINE, *references_present(accuracy, reference)]:
            if against not in accuracy:
                continue
            for method in method_order(accuracy):
                if method == against:
                    continue
                interval, left_out = paired_difference(accuracy[method], accuracy[against])
                rows.append({"dataset": dataset, "arch": arch, "level": level, "method": method,
                             "against": against, "n": interval.n, "mean": interval.mean,
                             "ci_low": interval.low, "ci_high": interval.high,
                             "excludes_zero": interval.excludes_zero,
                             "left_out_trials": ", ".join(map(str, left_out))})
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def ranking(records: pd.DataFrame, accuracies: Accuracies | None = None) -> pd.DataFrame:
    """Per point, methods by mean accuracy; rank = 1 + the methods that are better by a paired interval
    (from `accuracies`, the records' `trial_accuracies`, where the caller has them).

    A method with fewer than two trials has no rank (NaN) and enters no other method's comparison."""
    rows = []
    for (dataset, arch, level), accuracy in (trial_accuracies(records) if accuracies is None else accuracies).items():
        ranked = {method: values for method, values in accuracy.items() if len(values) >= 2}
        for method, values in accuracy.items():
            better, tied = 0, []
            for other, other_values in ranked.items():
                if other == method or method not in ranked:
                    continue
                interval, _ = paired_difference(other_values, values)
                if interval.excludes_zero:
                    better += interval.mean > 0
                else:
                    tied.append(other)
            own = t_interval(list(values.values()))
            rows.append({"dataset": dataset, "arch": arch, "level": level,
                         "rank": 1 + better if method in ranked else math.nan, "method": method, "n": own.n,
                         "accuracy": own.mean, "ci_low": own.low, "ci_high": own.high,
                         "tied_with": ", ".join(method_order(tied))})
    table = pd.DataFrame(rows, columns=RANKING_COLUMNS)
    return table.sort_values(["dataset", "arch", "level", "rank", "accuracy"], ascending=[True, True, True, True, False],
                             kind="stable", na_position="last").reset_index(drop=True)


def interval_text(mean: float, low: float, high: float, n: int, signed: bool = True) -> str:
    """`+1.23 [+0.40, +2.06]`, or the mean with 'no interval, n = 1' where n < 2."""
    sign = "+" if signed else ""
    if n == 0:
        return "—"
    if n < 2:
        return f"{mean:{sign}.2f} (no interval, n = {n})"
    return f"{mean:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"


def shown_differences(table: pd.DataFrame) -> pd.DataFrame:
    """The differences of one point as a reader sees them: paper names, interval text, a mark where it
    excludes 0."""
    return pd.DataFrame({
        "Method": [display_name(method) for method in table.method],
        "vs": [display_name(method) for method in table.against],
        "Δ accuracy (points) [95% CI]": [interval_text(*values) for values in
                                         zip(table["mean"], table.ci_low, table.ci_high, table.n, strict=True)],
        "n": table.n.astype(int),
        "≠ 0": ["yes" if excludes else "" for excludes in table.excludes_zero],
        "trials left out": table.left_out_trials,
    })


def shown_ranking(table: pd.DataFrame) -> pd.DataFrame:
    """The ranking of one point as a reader sees it."""
    return pd.DataFrame({
        "Rank": ["—" if math.isnan(rank) else str(int(rank)) for rank in table["rank"]],
        "Method": [display_name(method) for method in table.method],
        "Accuracy (%) [95% CI]": [interval_text(*values, signed=False) for values in
                                  zip(table.accuracy, table.ci_low, table.ci_high, table.n, strict=True)],
        "n": table.n.astype(int),
        "Not separable from": [("fewer than 2 trials: not ranked" if math.isnan(rank) else
                                ", ".join(display_name(name) for name in tied.split(", ") if name))
                               for rank, tied in zip(table["rank"], table.tied_with, strict=True)],
    })
