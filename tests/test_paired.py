"""Paired statistics against a hand computation on job folders with known per-trial differences.

dense: 80, 82, 81 %; synflow: +3, +4, +5 points; snip: -2, -1, -1; grasp lacks trial 2 (-5, -3);
sanity-check ran trial 0 only. t(0.975, 2) = 4.302653, t(0.975, 1) = 12.706205.
"""

import math

import pytest

from bench.collect import collect
from bench.paired import differences, interval_text, ranking, t_interval
from tests.test_report import record, spec, write_job

DENSE = [0.80, 0.82, 0.81]
DELTAS = {"synflow": [3, 4, 5], "snip": [-2, -1, -1], "grasp": [-5, -3], "sanity-check": [-10]}
LEVEL = 0.5


@pytest.fixture()
def collection(tmp_path):
    results = tmp_path / "results"
    for trial, accuracy in enumerate(DENSE):
        job = spec("dense", trial)
        write_job(results, job, [record(job, accuracy, 0.0)])
    for method, deltas in DELTAS.items():
        for trial, delta in enumerate(deltas):
            job = spec(method, trial, LEVEL)
            write_job(results, job, [record(job, DENSE[trial] + delta / 100, LEVEL)])
    return collect(results)


def row(table, method, against="dense"):
    match = table[(table.method == method) & (table.against == against)]
    assert len(match) == 1, match
    return match.iloc[0]


def test_intervals_match_a_hand_computation(collection):
    table = differences(collection.records)
    assert set(table.level) == {"0.5"}
    synflow = row(table, "synflow")
    assert synflow.n == 3 and synflow["mean"] == pytest.approx(4.0)
    half = 4.302653 * 1.0 / math.sqrt(3)
    assert (synflow.ci_low, synflow.ci_high) == pytest.approx((4 - half, 4 + half), abs=1e-4)
    assert synflow.excludes_zero
    snip = row(table, "snip")
    half = 4.302653 * math.sqrt(1 / 3) / math.sqrt(3)
    assert (snip["mean"], snip.ci_low, snip.ci_high) == pytest.approx((-4 / 3, -4 / 3 - half, -4 / 3 + half), abs=1e-4)
    assert not snip.excludes_zero


def test_a_missing_trial_leaves_the_pair_out_and_is_named(collection):
    grasp = row(differences(collection.records), "grasp")
    assert grasp.n == 2 and grasp["mean"] == pytest.approx(-4.0)
    assert (grasp.ci_low, grasp.ci_high) == pytest.approx((-4 - 12.706205, -4 + 12.706205), abs=1e-4)
    assert grasp.left_out_trials == "2"


def test_one_trial_gives_no_interval(collection):
    sanity = row(differences(collection.records), "sanity-check")
    assert sanity.n == 1 and math.isnan(sanity.ci_low) and not sanity.excludes_zero
    assert interval_text(sanity["mean"], sanity.ci_low, sanity.ci_high, sanity.n) == "-10.00 (no interval, n = 1)"


def test_the_reference_method_is_compared_with_every_other(collection):
    table = differences(collection.records, reference="synflow")
    snip = row(table, "snip", against="synflow")
    assert snip["mean"] == pytest.approx(-4 - 4 / 3) and snip.excludes_zero
    assert table[table.against == "synflow"].method.tolist() == ["dense", "snip", "grasp", "sanity-check"]


def test_ranking_ties_are_the_methods_no_interval_separates(collection):
    table = ranking(collection.records).set_index("method")
    assert table.loc["synflow", "rank"] == 1  # above dense in every trial: an interval above 0
    assert table.loc["dense", "rank"] == 2 and table.loc["snip", "rank"] == 2
    assert "snip" in table.loc["dense", "tied_with"] and "dense" in table.loc["snip", "tied_with"]
    assert table.loc["synflow", "accuracy"] == pytest.approx(85.0)
    assert math.isnan(table.loc["sanity-check", "rank"]) and "sanity-check" not in table.loc["dense", "tied_with"]


def test_t_interval_of_constant_differences_is_a_point():
    interval = t_interval([2.0, 2.0, 2.0])
    assert (interval.low, interval.high) == (2.0, 2.0) and interval.excludes_zero


def test_forest_plot_is_written_per_level(collection, tmp_path):
    from bench import figures

    paths = figures.paired_differences(differences(collection.records), tmp_path / "figures")
    assert [path.name for path in paths] == ["paired-differences-cifar10@5k-resnet20-0.5.png"]
    assert all(path.stat().st_size > 1000 for path in paths)


def test_the_report_carries_the_paired_tables_and_refuses_an_unknown_reference(collection, tmp_path, capsys):
    from bench.report import main

    results = tmp_path / "results"
    out = tmp_path / "report"
    assert main(["--results", str(results), "--all-jobs", "--out", str(out), "--reference", "snip"]) == 0
    readme = (out / "README.md").read_text()
    assert "## Paired differences between methods" in readme
    table = (out / "tables" / "cifar10@5k-resnet20-paired-0.5.md").read_text()
    assert "+4.00 [+1.52, +6.48]" in table and "(no interval, n = 1)" in table
    assert (out / "tables" / "cifar10@5k-resnet20-ranking-0.5.csv").exists()
    assert "(figures/paired-differences-cifar10@5k-resnet20-0.5.png)" in readme
    assert main(["--results", str(results), "--all-jobs", "--out", str(out), "--reference", "nope"]) == 2
    assert "--reference 'nope' has no finished job here" in capsys.readouterr().err
