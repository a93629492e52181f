"""The report's figures read right for short runs: one trial promises no spread, 14 methods can be told
apart, a run tested once per job shows final accuracies (not a column of dots), and the spectrum names
both IMC sparsities. Figures are drawn from small record tables made here; `save` is wrapped to keep
the figure it would close."""

import itertools
import math

import pandas as pd
import pytest

from bench import figures
from bench.paper import METHOD_ORDER

DATASET, ARCH = "digits", "resnet20"


@pytest.fixture()
def drawn(monkeypatch, tmp_path):
    kept = []

    def keep(figure, folder, name):
        kept.append(figure)
        return [tmp_path / f"{name}.png"]

    monkeypatch.setattr(figures, "save", keep)
    return kept


def records(trials: int, methods=("dense", "snip", "synflow")) -> pd.DataFrame:
    rows = []
    for trial in range(trials):
        for index, method in enumerate(methods):
            for level, sparsity in (("none", 0.0),) if method == "dense" else (("0.5", 0.5), ("0.9", 0.9)):
                rows.append({"job_id": f"{method}-{level}-{trial}", "method": method, "dataset": DATASET, "arch": ARCH,
                             "trial": trial, "level": level, "round": 0, "achieved_sparsity": sparsity,
                             "accuracy": 0.9 - 0.01 * index - 0.001 * trial, "extra": {}})
    return pd.DataFrame(rows)


def texts(figure) -> str:
    axes = figure.axes
    parts = [figure._suptitle.get_text() if figure._suptitle else ""]
    for axis in axes:
        parts.append(axis.get_title())
        legend = axis.get_legend()
        parts += [text.get_text() for text in legend.get_texts()] if legend else []
    return " | ".join(parts)


def test_a_figure_of_one_trial_promises_no_spread(drawn):
    figures.accuracy_vs_density(records(1), DATASET, ARCH, None)
    figures.accuracy_vs_sparsity(records(1), DATASET, ARCH, None)
    shown = " ".join(texts(figure) for figure in drawn)
    assert "±" not in shown and "1 trial" in shown


def test_several_trials_name_their_spread(drawn):
    figures.accuracy_vs_density(records(3), DATASET, ARCH, None)
    assert "mean ± std over 3 trials" in texts(drawn[0])


def test_fourteen_methods_get_fourteen_looks():
    methods = [name for name in METHOD_ORDER if name != "dense"] + ["magnitude"]
    styles = figures.method_styles(pd.Series(methods))
    looks = {(style["color"], style["linestyle"]) for style in styles.values()}
    assert len(styles) >= 13 and len(looks) == len(styles)
    assert len({style["marker"] for style in styles.values()}) == len(styles)


def epochs_of(frame: pd.DataFrame, epochs: int, tested_every: int) -> pd.DataFrame:
    rows = []
    for job_id in frame.job_id:
        for epoch in range(epochs):
            tested = (epoch + 1) % tested_every == 0 or epoch == epochs - 1
            rows.append({"job_id": job_id, "phase": "train", "epoch": epoch, "train_loss": 1.0 / (epoch + 1),
                         "test_accuracy": 0.9 if tested else None})
    return pd.DataFrame(rows)


def test_a_run_tested_once_per_job_shows_final_accuracies(drawn):
    frame = records(1)
    figures.training_curves(frame, epochs_of(frame, 4, 10), DATASET, ARCH, None)
    accuracy = drawn[0].axes[0]
    assert [label.get_text() for label in accuracy.get_yticklabels()][:2] == ["SNIP", "SynFlow"]
    assert "final test accuracy" in accuracy.get_title()


def test_a_longer_run_draws_accuracy_curves_over_the_epochs(drawn):
    frame = records(1)
    figures.training_curves(frame, epochs_of(frame, 30, 10), DATASET, ARCH, None)
    accuracy = drawn[0].axes[0]
    assert accuracy.get_xlim()[0] < 10 < 30 <= accuracy.get_xlim()[1]
    assert all(len(line.get_xdata()) == 3 for line in accuracy.get_lines())


def test_the_spectrum_names_the_gap_rule_s_star_and_the_pruned_sparsity(drawn):
    extra = {"spectrum_nodes": [9.0, 0.5, -1.0], "spectrum_weights": [0.1, 0.6, 0.3], "found_sparsity": 3.7e-6,
             "split": {"upper": 9.0, "lower": 0.5}, "lipschitz": 0.5}
    frame = pd.DataFrame([{"method": "imc-analysis", "dataset": DATASET, "arch": ARCH, "trial": 0,
                           "achieved_sparsity": 7.4e-6, "extra": extra}])
    figures.spectrum(frame, None)
    title = drawn[0].axes[0].get_title()
    assert "3.7e-06" in title and "7.4e-06" in title


def test_figures_drawn_in_forked_children_are_the_files_drawn_here(tmp_path):
    """`drawing` runs figure functions in forked children; their paths come back once the block has
    finished, the PNG is byte-identical to one drawn in this process, and only the formats asked for exist."""
    from bench import figure_saves

    data = records(2)
    with figure_saves.drawing(2, figure_saves.figure_formats("pdf")):
        forked = figure_saves.draw(figures.accuracy_vs_sparsity, data, DATASET, ARCH, tmp_path / "forked")
        density = figure_saves.draw(figures.accuracy_vs_density, data, DATASET, ARCH, tmp_path / "forked")
        assert forked.paths == [] or len(forked.paths) == 2  # not yet known while the child runs
        figure_saves.finish()
        assert [path.suffix for path in forked.paths] == [".png", ".pdf"] and len(density.paths) == 2
    inline = figure_saves.draw(figures.accuracy_vs_sparsity, data, DATASET, ARCH, tmp_path / "inline")
    assert [path.name for path in inline.paths] == [path.name for path in forked.shown()]
    assert forked.shown()[0].read_bytes() == inline.paths[0].read_bytes()
    assert sorted(path.name for path in (tmp_path / "forked").iterdir()) == sorted(
        path.name for path in forked.paths + density.paths)


def test_a_figure_function_that_fails_in_its_child_is_named_after_the_others_finished(tmp_path):
    from bench import figure_saves
    from bench.errors import BenchError

    def broken(folder):
        raise RuntimeError("this figure cannot be drawn")

    data = records(1)
    with pytest.raises(BenchError, match=r"figure\(s\) broken could not be drawn"):
        with figure_saves.drawing(2):
            failed = figure_saves.draw(broken, tmp_path)
            fine = figure_saves.draw(figures.accuracy_vs_sparsity, data, DATASET, ARCH, tmp_path)
            figure_saves.start()
            late = figure_saves.draw(figures.accuracy_vs_density, data, DATASET, ARCH, tmp_path)  # a second batch
    assert failed.failed and failed.paths == []
    assert [path.suffix for path in fine.paths] == [".png"] and fine.paths[0].stat().st_size > 0
    assert not late.failed and late.paths[0].name.startswith("accuracy-vs-density")


def test_a_report_without_pdf_leaves_no_pdf_of_an_earlier_report(tmp_path):
    from bench import figure_saves

    data = records(1)
    with figure_saves.drawing(1, figure_saves.figure_formats("png,pdf")):
        both = figures.accuracy_vs_sparsity(data, DATASET, ARCH, tmp_path)
    assert [path.suffix for path in both] == [".png", ".pdf"] and both[1].exists()
    with figure_saves.drawing(1):
        figures.accuracy_vs_sparsity(data, DATASET, ARCH, tmp_path)
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".png"]  # the stale PDF is gone


def test_an_unknown_figure_format_is_named_with_the_accepted_ones():
    from bench import figure_saves
    from bench.errors import BenchError

    assert figure_saves.figure_formats("pdf, PNG") == ("png", "pdf")
    with pytest.raises(BenchError, match="figure format.*eps not known; accepted: png, pdf, svg"):
        figure_saves.figure_formats("png,eps")


def test_points_on_different_numbers_of_trials_say_so(drawn):
    """A run still going: dense and SNIP have 3 trials, SynFlow 1; no title may claim "over 3 trials"."""
    frame = records(3)
    frame = frame[(frame.method != "synflow") | (frame.trial == 0)]
    figures.accuracy_vs_density(frame, DATASET, ARCH, None)
    figures.accuracy_vs_sparsity(frame, DATASET, ARCH, None)
    for figure in drawn:
        assert "over 1-3 trials per point" in texts(figure) and "over 3 trials" not in texts(figure)


@pytest.mark.parametrize("lowest", [60.0, 10.0, 5.0, 1.0, 0.05, 0.001])
def test_density_ticks_leave_room_for_their_labels(lowest):
    right = lowest * 0.92
    ticks = figures.density_ticks(102.0, right)
    span = math.log10(102.0 / right)
    assert ticks[0] == 100 and len(ticks) >= 3 and ticks[-1] <= 1.5 * lowest
    assert min(math.log10(high / low) for high, low in itertools.pairwise(ticks)) >= figures.TICK_GAP * span


def test_the_cost_figure_compares_every_method_at_the_common_level_by_the_median(drawn):
    """A grid without `found` jobs compares costs at the level most methods ran at, not at the found point
    (where only dense would stand); one disturbed trial (a paused process) does not set a method's bar."""
    frame = records(3).assign(epochs=16, device="cpu", runtime_s=100.0)
    frame.loc[(frame.method == "snip") & (frame.trial == 1), "runtime_s"] = 5000.0
    figures.cost_per_method(frame, DATASET, ARCH, None)
    runtime = drawn[0].axes[0]
    bars = {label.get_text(): patch.get_height()
            for label, patch in zip(runtime.get_xticklabels(), runtime.patches, strict=True)}
    assert set(bars) == {"Baseline", "SNIP", "SynFlow"}
    assert bars["SNIP"] == 100.0
    assert "sparsity ≈ 0.5" in texts(drawn[0]) and "median over 3 trials" in texts(drawn[0])
