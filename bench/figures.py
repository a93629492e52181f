"""Report figures (matplotlib; PNG, and PDF or SVG on request), drawn from the tidy records and the jobs' CSV files.

- accuracy vs density: every method on one axes, density on a log scale from 100% down to the
  sparsest point, mean line and std band over trials, the dense control as a band (the LTH and
  SynFlow papers' figure);
- accuracy vs sparsity: one panel per method, mean ± std band over trials, the dense control (mean ±
  std) on every panel (ShrinkBench's habit);
- per-layer density of each method at one sparsity (`layers.csv`): where each method keeps weights;
- training curves (`epochs.csv`): test accuracy and training loss per epoch trained, one job per method;
- runtime and epochs per method, median over trials (at the "found" operating point, or at the level
  most methods ran at where that covers more methods);
- IMC's Hessian spectrum (SLQ nodes and weights) with the chosen split and 4K marked;
- sensitivity (paper figures 3-6): IMC accuracy / final loss against one varied setting;
- Lipschitz estimates K(p, Delta) (paper tables 14-15) as a log-scale plot, with ||H(W+U) - H(W)|| and
  the share of ReLU sign flips between W and W+U where the records hold them.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench import figure_saves  # noqa: E402
from bench.paper import ANALYSIS_ONLY, BASELINE, IMC_ROWS, display_name  # noqa: E402
from bench.tables import ROUND_TOLERANCE, found_rows, method_order, number, rows_at_level  # noqa: E402


def save(figure, folder: Path, name: str) -> list[Path]:
    """Write `figure` in the report's figure formats (`bench.figure_saves`), then close it."""
    paths = figure_saves.save(figure, folder, name)
    plt.close(figure)
    return paths


def spread_note(trials: pd.Series, statistic: str = "mean ± std", each: str = "point") -> str:
    """What a band or an average is over, from the trial count of every plotted point: a figure of one
    trial promises no spread, and one whose points rest on different numbers of trials (a run still
    going, a failed job) says so instead of naming the largest count."""
    fewest, most = int(trials.min()), int(trials.max())
    if most <= 1:
        return "1 trial: no spread" if "±" in statistic else "1 trial"
    return f"{statistic} over {most} trials" if fewest == most else \
        f"{statistic} over {fewest}-{most} trials per {each}"


def _points(group: pd.DataFrame) -> pd.DataFrame:
    """Per level and round: mean sparsity, mean and std of accuracy (%, std 0 for one trial), trials."""
    stats = group.groupby(["level", "round"]).agg(
        sparsity=("achieved_sparsity", "mean"), mean=("accuracy", "mean"), std=("accuracy", "std"),
        trials=("trial", "nunique"))
    return stats.assign(mean=stats["mean"] * 100, std=stats["std"].fillna(0.0) * 100).sort_values("sparsity")


def _dense_trials(group: pd.DataFrame) -> pd.Series:
    """The dense band's trial count, as one more plotted point (none where dense did not run)."""
    trials = group[group.method == BASELINE].trial.nunique()
    return pd.Series([trials] if trials else [], dtype=int)


def accuracy_vs_sparsity(records: pd.DataFrame, dataset: str, arch: str, folder: Path) -> list[Path]:
    group = records[(records.dataset == dataset) & (records.arch == arch)]
    methods = [name for name in method_order(group.method) if name != BASELINE]
    if not methods:
        return []
    dense = group[group.method == BASELINE].accuracy * 100
    columns = min(4, len(methods))
    rows = math.ceil(len(methods) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False, sharey=True,
                                layout="constrained")
    trials = [_dense_trials(group)]
    for axis, method in zip(axes.flat, methods, strict=False):
        points = _points(group[group.method == method])
        trials.append(points.trials)
        axis.plot(points.sparsity, points["mean"], "o-", color="C0", label=display_name(method))
        axis.fill_between(points.sparsity, points["mean"] - points["std"], points["mean"] + points["std"],
                          color="C0", alpha=0.25)
        if not dense.empty:
            spread = dense.std(ddof=1) if len(dense) > 1 else 0.0
            axis.axhline(dense.mean(), color="k", linestyle="--", linewidth=1, label=BASELINE)
            axis.axhspan(dense.mean() - spread, dense.mean() + spread, color="k", alpha=0.1)
        axis.set_title(display_name(method), fontsize=9)
        axis.set_xlabel("sparsity")
        axis.set_xlim(0, 1)
    for axis in axes[:, 0]:
        axis.set_ylabel("test accuracy (%)")
    for axis in list(axes.flat)[len(methods):]:
        axis.axis("off")
    figure.suptitle(f"{dataset}, {arch}: accuracy vs sparsity ({spread_note(pd.concat(trials))}; dashed: dense)")
    return save(figure, folder, f"accuracy-vs-sparsity-{dataset}-{arch}")


COLORS = [plt.get_cmap("tab10")(index) for index in range(10)]
LINESTYLES = ("-", "--", ":")  # the 11th method on reuses the colours with another line style
MARKERS = "os^vD<>pPX*hH8d"
DENSITY_TICK_SETS = (  # densest first; the axis takes the densest whose labels do not run into each other
    (100, 90, 80, 70, 60, 50, 40, 30, 20, 10),
    (100, 70, 50, 30, 20, 10, 7, 5, 3, 2, 1, 0.7, 0.5, 0.3, 0.2, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01),
    (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01),
    (100, 10, 1, 0.1, 0.01, 0.001),
)
TICK_GAP = 0.07
"""Least distance between two labelled density ticks, as a share of the axis: about 0.45 inch on the
accuracy-vs-density figure, room for a label such as "100%"."""


def method_styles(methods) -> dict[str, dict]:
    """Colour, line style and marker of each (non-dense) method, by the paper's row order, so that a
    method looks the same in every figure of one dataset and arch. Ten colours that can be told apart
    (tab10), then the same colours dashed, then dotted, each method with its own marker: no two of the
    14 methods of the default grid share a look (tab20's light/dark pairs could not be told apart)."""
    order = [name for name in method_order(methods) if name != BASELINE]
    return {name: {"color": COLORS[index % len(COLORS)],
                   "linestyle": LINESTYLES[index // len(COLORS) % len(LINESTYLES)],
                   "marker": MARKERS[index % len(MARKERS)]}
            for index, name in enumerate(order)}


def _density_axis(axis, lowest: float) -> None:
    """Log-scale density axis from 100% (left) down to just below `lowest` (percent)."""
    lowest = max(min(lowest, 100.0), 1e-3)
    axis.set_xscale("log")
    axis.set_xlim(102.0, lowest * 0.92)
    shown = density_ticks(102.0, lowest * 0.92)
    axis.set_xticks(shown, [f"{tick:g}%" for tick in shown])
    axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axis.set_xlabel("density: weights kept (log scale)")


def density_ticks(left: float, right: float) -> list[float]:
    """The densest tick set's ticks within [right, left] (percent, log scale) whose neighbours are at
    least `TICK_GAP` of the axis apart; the sparsest set (powers of ten) where none is."""
    span = math.log10(left / right)
    for ticks in DENSITY_TICK_SETS:
        shown = [tick for tick in ticks if right <= tick <= left]
        gaps = [math.log10(high / low) for high, low in itertools.pairwise(shown)]
        if not gaps or min(gaps) >= TICK_GAP * span:
            return shown
    return shown


def accuracy_vs_density(records: pd.DataFrame, dataset: str, arch: str, folder: Path) -> list[Path]:
    """Every method on one axes: mean accuracy and std band over trials against density."""
    group = records[(records.dataset == dataset) & (records.arch == arch)]
    methods = [name for name in method_order(group.method) if name != BASELINE]
    if not methods:
        return []
    figure, axis = plt.subplots(figsize=(8.5, 4.8), layout="constrained")
    dense = group[group.method == BASELINE].accuracy * 100
    if not dense.empty:
        spread = dense.std(ddof=1) if len(dense) > 1 else 0.0
        axis.axhline(dense.mean(), color="k", linestyle="--", linewidth=1.2,
                     label="Dense" + (" (mean ± std)" if len(dense) > 1 else ""))
        axis.axhspan(dense.mean() - spread, dense.mean() + spread, color="k", alpha=0.12, linewidth=0)
    lowest = 100.0
    styles = method_styles(group.method)
    trials = [_dense_trials(group)]
    for method in methods:
        points = _points(group[group.method == method])
        trials.append(points.trials)
        density = 100.0 * (1.0 - points.sparsity)
        lowest = min(lowest, density.min())
        style = styles[method]
        axis.plot(density, points["mean"], markersize=4, linewidth=1.3, label=display_name(method),
                  **style)
        axis.fill_between(density, points["mean"] - points["std"], points["mean"] + points["std"],
                          color=style["color"], alpha=0.15, linewidth=0)
    _density_axis(axis, lowest)
    axis.set_ylabel("test accuracy (%)")
    axis.grid(True, which="major", alpha=0.3)
    axis.set_title(f"{dataset}, {arch}: test accuracy vs density ({spread_note(pd.concat(trials))})", fontsize=10)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, handlelength=3.5)
    return save(figure, folder, f"accuracy-vs-density-{dataset}-{arch}")


def comparison_target(group: pd.DataFrame) -> tuple[str, float | None]:
    """The sparsity at which to compare methods job by job: the numeric level most methods ran at,
    else IMC's found s*; returns (label, sparsity or None for "each method's found point")."""
    numeric = group[~group.level.isin(["found", "none"])]
    if not numeric.empty:
        level = numeric.groupby("level").method.nunique().sort_values(ascending=False, kind="stable").index[0]
        return f"sparsity ≈ {level}", float(level)
    return "the found sparsity", None


def representative_jobs(group: pd.DataFrame, target: float | None, tolerance: float = ROUND_TOLERANCE) -> pd.DataFrame:
    """One record per method (its first trial): the round nearest `target` (None: its found-sparsity
    row), dropped where it is further than `tolerance` from the target."""
    first = group[group.trial == group.trial.min()]
    if target is None:
        return found_rows(first)
    chosen = []
    for _, rows in first.groupby("method", sort=False):
        gap = (rows.achieved_sparsity - target).abs()
        if gap.min() <= tolerance:
            chosen.append(rows.loc[[gap.idxmin()]])
    return pd.concat(chosen) if chosen else group.iloc[0:0]


def layer_density(records: pd.DataFrame, layers: pd.DataFrame, dataset: str, arch: str, folder: Path) -> list[Path]:
    """Density of every prunable layer for each method at one sparsity, with the layers' sizes."""
    group = records[(records.dataset == dataset) & (records.arch == arch) & (records.method != BASELINE)]
    if group.empty or layers.empty:
        return []
    label, target = comparison_target(group)
    chosen = representative_jobs(group, target)
    if chosen.empty:
        return []
    figure, (sizes, axis) = plt.subplots(2, 1, figsize=(10, 5.6), sharex=True, height_ratios=(1, 3),
                                         layout="constrained")
    order: list[str] = []
    plotted = 0
    styles = method_styles(group.method)
    for method in method_order(chosen.method):
        row = chosen[chosen.method == method].iloc[0]
        rows = layers[(layers.job_id == row.job_id) & (layers["round"] == row["round"])]
        if rows.empty:
            continue
        order = order or list(rows.layer)
        rows = rows.set_index("layer").loc[order]
        axis.plot(range(len(order)), 100.0 * rows.kept / rows.weights, markersize=3, linewidth=1.1,
                  label=f"{display_name(method)} ({number(row.achieved_sparsity, 3)})",
                  **styles[method])
        if plotted == 0:
            sizes.bar(range(len(order)), rows.weights, color="0.6")
        plotted += 1
    if not plotted:
        plt.close(figure)
        return []
    sizes.set_yscale("log")
    sizes.set_ylabel("weights")
    axis.set_ylabel("density: weights kept (%)")
    axis.set_ylim(0, 105)
    axis.set_xticks(range(len(order)), [name.removesuffix(".weight") for name in order], rotation=90, fontsize=7)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, handlelength=3.5,
                title="method (achieved sparsity)", title_fontsize=7)
    sizes.set_title(f"{dataset}, {arch}: per-layer density at {label} (trial {int(chosen.trial.min())})", fontsize=10)
    return save(figure, folder, f"layer-density-{dataset}-{arch}")


def training_curves(records: pd.DataFrame, epochs: pd.DataFrame, dataset: str, arch: str, folder: Path) -> list[Path]:
    """Test accuracy and training loss per epoch trained (phases in order), one job per method."""
    group = records[(records.dataset == dataset) & (records.arch == arch)]
    if group.empty or epochs.empty:
        return []
    label, target = comparison_target(group[group.method != BASELINE]) if (group.method != BASELINE).any() \
        else (BASELINE, None)
    chosen = pd.concat([representative_jobs(group[group.method != BASELINE], target),
                        group[(group.method == BASELINE) & (group.trial == group.trial.min())]])
    jobs = []  # (method, its epochs) in legend order, dense last
    for method in [*[name for name in method_order(chosen.method) if name != BASELINE], BASELINE]:
        if method in set(chosen.method):
            rows = epochs[epochs.job_id == chosen[chosen.method == method].iloc[0].job_id]
            if not rows.empty:
                jobs.append((method, rows))
    if not jobs:
        return []
    # where most jobs were tested once (short runs), their final accuracies as dots, not a column of points
    curves = statistics.median(rows.test_accuracy.notna().sum() for _, rows in jobs) > 1
    figure, (accuracy, loss) = plt.subplots(1, 2, figsize=(12, 4.4), sharex=curves, layout="constrained")
    styles = method_styles(group.method)
    for position, (method, rows) in enumerate(jobs):
        trained = pd.Series(range(1, len(rows) + 1), index=rows.index)
        tested = rows.test_accuracy.notna()  # the test pass runs every train.eval_every epochs
        # dense last, dashed: a method whose first phase is the dense run (magnitude) would hide it
        style = {"color": "k", "linestyle": "--", "marker": "o"} if method == BASELINE else dict(styles[method])
        name = display_name(method)
        if curves:  # every test pass marked (a job may have only one)
            accuracy.plot(trained[tested], 100.0 * rows.test_accuracy[tested], linewidth=1.1, markersize=4,
                          label=name, **style)
        else:
            accuracy.plot(100.0 * rows.test_accuracy[tested].iloc[-1:], [position], markersize=6,
                          **(style | {"linestyle": "none"}))
        loss.plot(trained, rows.train_loss, linewidth=1.1, label=name, markersize=2.5,
                  **(style if len(rows) <= 40 else style | {"marker": None}))
    loss.set_yscale("log")
    if curves:
        accuracy.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        accuracy.set(title="at each test pass (every train.eval_every epochs and at each phase's last)",
                     xlabel="epochs trained (all phases of the job, in order)", ylabel="test accuracy (%)")
    else:
        accuracy.set_yticks(range(len(jobs)), [display_name(method) for method, _ in jobs], fontsize=8)
        accuracy.invert_yaxis()
        accuracy.set(title="final test accuracy (a run this short tests most jobs only at their last epoch)", xlabel="test accuracy (%)")
    accuracy.title.set_fontsize(8)
    loss.set_title("every epoch", fontsize=8)
    loss.set(xlabel="epochs trained (all phases of the job, in order)", ylabel="training loss")
    for axis in (accuracy, loss):
        axis.grid(True, alpha=0.3)
    loss.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, handlelength=3.5)
    figure.suptitle(f"{dataset}, {arch}: training curves, one job per method at {label} (first trial)", fontsize=10)
    return save(figure, folder, f"training-curves-{dataset}-{arch}")


def cost_rows(group: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The operating point the cost figure compares methods at, and one record per (method, trial) there:
    the found-sparsity point (the paper's Table 8), unless the level most methods ran at covers more of
    them (a grid without `found` jobs), with an iterative method's round within `ROUND_TOLERANCE` of that level."""
    found = found_rows(group)
    label, target = comparison_target(group[group.method != BASELINE])
    if target is not None:
        level = rows_at_level(group, target, ROUND_TOLERANCE)
        if level.method.nunique() > found.method.nunique():
            return label, level
    return "found-sparsity point", found


def cost_per_method(records: pd.DataFrame, dataset: str, arch: str, folder: Path) -> list[Path]:
    """Runtime and epochs per method at one operating point (`cost_rows`). Runtime is the median over
    trials: a runtime is wall-clock, so interference (another job on the cores, a paused process) only
    ever adds to it, and one disturbed trial should not set a method's bar."""
    point, rows = cost_rows(records[(records.dataset == dataset) & (records.arch == arch)])
    if rows.empty:
        return []
    order = method_order(rows.method)
    stats = rows.groupby("method").agg(runtime=("runtime_s", "median"), epochs=("epochs", "median"),
                                       trials=("trial", "nunique")).loc[order]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    labels = [display_name(name) for name in order]
    left.bar(labels, stats.runtime, color="C1")
    left.set_ylabel("runtime (s)")
    right.bar(labels, stats.epochs, color="C2")
    right.set_ylabel("epochs")
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=75, labelsize=8)
    figure.suptitle(f"{dataset}, {arch}: cost per method at {point} ({spread_note(stats.trials, 'median', 'bar')}; "
                    f"device: {', '.join(sorted(set(rows.device)))})", fontsize=9)
    return save(figure, folder, f"cost-{dataset}-{arch}")


def spectrum(records: pd.DataFrame, folder: Path) -> list[Path]:
    """IMC's spectral density (one panel per dataset/arch, first trial) with the split and 4K."""
    imc = records[records.extra.map(lambda extra: isinstance(extra, dict) and "spectrum_nodes" in extra)]
    if imc.empty:
        return []
    firsts = imc.sort_values("trial").groupby(["dataset", "arch"]).head(1)
    figure, axes = plt.subplots(1, len(firsts), figsize=(5.5 * len(firsts), 3.6), squeeze=False, layout="constrained")
    for axis, (_, row) in zip(axes.flat, firsts.iterrows(), strict=True):
        extra = row.extra
        axis.bar(extra["spectrum_nodes"], extra["spectrum_weights"], width=_bar_width(extra["spectrum_nodes"]),
                 color="C0", alpha=0.7, label="SLQ nodes (weight)")
        axis.set_yscale("log")
        split = extra.get("split") or {}
        if split.get("upper") is not None:
            axis.axvspan(split["lower"], split["upper"], color="C3", alpha=0.3,
                         label=f"chosen gap, 4K = {4 * extra.get('lipschitz', math.nan):.3g}")
        reason = f" ({split['reason']})" if split.get("upper") is None and split.get("reason") else ""
        axis.set_title(f"{row.dataset}, {row.arch}, {display_name(row.method)}: "
                       f"s* = {_sparsity(extra.get('found_sparsity'))} by the gap rule{reason};\n"
                       f"the mask prunes {_sparsity(row.achieved_sparsity)} (the tables' sparsity)", fontsize=9)
        axis.set_xlabel("Hessian eigenvalue")
        axis.legend(fontsize=7)
    return save(figure, folder, "imc-spectrum")


def _sparsity(value: float | None) -> str:
    return "—" if value is None else number(value, 3) if value else "0"


def _bar_width(nodes: list[float]) -> float:
    span = (max(nodes) - min(nodes)) if nodes else 1.0
    return max(span / 200.0, 1e-6)


SENSITIVITY = {  # setting varied: (figure title, metric, axis label)
    "rewind_epoch": ("Figure 3: accuracy vs rewind epoch", "accuracy", "test accuracy (%)"),
    "hessian_batch_size": ("Figure 4: accuracy vs Hessian batch size", "accuracy", "test accuracy (%)"),
    "pretrain_epochs": ("Figure 5: final loss vs pretraining epochs", "test_loss", "final test loss"),
    "lr": ("Figure 6: accuracy vs learning rate", "accuracy", "test accuracy (%)"),
}


def sensitivity(records: pd.DataFrame, folder: Path) -> list[Path]:
    """One figure per setting that varies among the IMC jobs (figures 3-6 of the paper)."""
    imc = records[records.method.isin(IMC_ROWS + ANALYSIS_ONLY)].copy()
    if imc.empty:
        return []
    settings = imc.hparams.map(json.loads).combine(imc.train.map(json.loads), lambda h, t: h | t)
    paths = []
    for setting, (title, metric, label) in SENSITIVITY.items():
        values = settings.map(lambda entry, key=setting: entry.get(key))
        if values.dropna().nunique() < 2:
            continue
        figure, axis = plt.subplots(figsize=(5, 3.4))
        data = imc.assign(value=values).dropna(subset=["value"])
        for method, group in data.groupby("method"):
            scale = 100.0 if metric == "accuracy" else 1.0
            stats = group.groupby("value")[metric].agg(["mean", "std"]).fillna(0.0) * scale
            axis.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3,
                          label=display_name(method))
        axis.set_xlabel(setting)
        axis.set_ylabel(label)
        if setting == "lr":
            axis.set_xscale("log")
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=7)
        paths += save(figure, folder, f"sensitivity-{setting}")
    return paths


def lipschitz(estimates: pd.DataFrame, folder: Path) -> list[Path]:
    """K against Delta, one line per p (tables 14-15), beside what K measures where the records have it:
    ||H(W+U) - H(W)|| at the pair that gave K (dashed, same colour) and the share of ReLU units whose
    sign flips between W and W+U (right panel). `estimates` has dataset, p, delta, K and optionally
    hessian_change and relu_flip_share."""
    estimates = estimates[estimates.K > 0]  # a log axis; K = 0 would mean F is linear there
    if estimates.empty:
        return []
    flips = "relu_flip_share" in estimates and estimates.relu_flip_share.notna().any()
    figure, axes = plt.subplots(1, 2 if flips else 1, figsize=(11 if flips else 5.5, 3.8), squeeze=False,
                                layout="constrained")
    left = axes[0, 0]
    for index, ((dataset, p), group) in enumerate(estimates.groupby(["dataset", "p"])):
        stats = group.groupby("delta").mean(numeric_only=True)
        color = f"C{index % 10}"
        left.plot(stats.index, stats.K, "o-", color=color, label=f"{dataset}, p={p:g}: K")
        if "hessian_change" in stats and stats.hessian_change.notna().any():
            left.plot(stats.index, stats.hessian_change, "s--", color=color, label=f"{dataset}, p={p:g}: ‖ΔH‖")
        if flips:
            axes[0, 1].plot(stats.index, stats.relu_flip_share, "o-", color=color, label=f"{dataset}, p={p:g}")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("Delta")
    left.set_ylabel("K (solid); ‖H(W+U) − H(W)‖ (dashed)")
    left.set_title("Lipschitz constant of F(U) (paper tables 14-15)", fontsize=9)
    left.legend(fontsize=7)
    if flips:
        right = axes[0, 1]
        right.set_xscale("log")
        right.set_xlabel("Delta")
        right.set_ylabel("share of ReLU units that flip sign")
        right.set_title("ReLU sign flips between W and W+U (at the pairs behind K)", fontsize=9)
        right.legend(fontsize=7)
    return save(figure, folder, "lipschitz")


def paired_differences(table: pd.DataFrame, folder: Path) -> list[Path]:
    """Forest plot per (dataset, arch, level): each method's paired accuracy difference to dense (and to
    the reference) with its 95% interval; filled where the interval excludes 0, hollow where it does not,
    a grey cross where no interval exists (n < 2); a row over fewer trials than the level's most says its n."""
    paths = []
    for (dataset, arch, level), point in table.groupby(["dataset", "arch", "level"], sort=False):
        panels = list(dict.fromkeys(point.against))
        n_max = int(point.n.max())
        height = max(2.0, 0.32 * point.method.nunique() + 1.2)
        figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), height), squeeze=False,
                                    layout="constrained")
        for axis, against in zip(axes[0], panels, strict=True):
            rows = point[point.against == against].iloc[::-1]
            positions = range(len(rows))
            for position, (_, row) in zip(positions, rows.iterrows(), strict=True):
                color = "C3" if row.excludes_zero else "C0"
                if row.n >= 2:
                    axis.errorbar(row["mean"], position, xerr=[[row["mean"] - row.ci_low], [row.ci_high - row["mean"]]],
                                  fmt="o", color=color, capsize=3, markerfacecolor=color if row.excludes_zero else "white")
                else:
                    axis.plot(row["mean"], position, "x", color="0.4")
            axis.axvline(0, color="k", linewidth=0.8)
            labels = [display_name(row.method) + (f" (n = {int(row.n)})" if row.n < n_max else "")
                      for _, row in rows.iterrows()]
            axis.set_yticks(list(positions), labels, fontsize=8)
            axis.set_xlabel(f"accuracy − {display_name(against)} (points)")
            axis.grid(axis="x", alpha=0.3)
        what = ("1 trial: no interval exists" if n_max < 2 else
                f"up to {n_max} trials, 95% t-interval (red: excludes 0)")
        figure.suptitle(f"{dataset}, {arch}, sparsity {level}\npaired differences by trial, {what}", fontsize=9)
        paths += save(figure, folder, f"paired-differences-{dataset}-{arch}-{level}")
    return paths
