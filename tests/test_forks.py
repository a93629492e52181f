"""The report's parallel reading: work split over forked children comes back whole and in order, a child
that fails is named, and job folders read in children give exactly the tables read here."""

import pandas as pd
import pytest

from bench import collect as collect_module
from bench import forks
from bench.collect import collect
from tests.test_report import fixture_results  # noqa: F401 - the fixture's job folders


def doubled(items: list[int]) -> list[int]:
    return [2 * item for item in items]


def fails_on_nine(items: list[int]) -> list[int]:
    if 9 in items:
        raise ValueError("nine")
    return items


def test_split_work_comes_back_whole_and_in_order():
    assert forks.split_map(doubled, list(range(11)), 3) == [2 * item for item in range(11)]
    assert forks.split_map(doubled, [1, 2], 4) == [2, 4]  # too few to split: done here


def test_a_failed_child_is_named_and_nothing_is_left_running():
    with pytest.raises(RuntimeError, match="a forked child of fails_on_nine failed"):
        forks.split_map(fails_on_nine, list(range(12)), 3)


def test_job_folders_read_in_forked_children_give_the_same_tables(fixture_results, monkeypatch):  # noqa: F811
    results, specs = fixture_results
    (results / "jobs" / "a-stray-folder").mkdir()  # no spec.json: a corrupt row, listed first
    serial = collect(results), collect(results, specs)
    started = []

    def counted(*arguments, **keywords):
        started.append(arguments[0])
        return real_start(*arguments, **keywords)

    real_start = forks.start
    monkeypatch.setattr(forks, "start", counted)
    monkeypatch.setattr(collect_module, "FORKED_READ_FROM", 1)
    monkeypatch.setattr(collect_module, "available_cores", lambda: 3)
    forked = collect(results), collect(results, specs)
    assert len(started) == 4  # two children for each of the two collections
    for here, there in zip(serial, forked, strict=True):
        pd.testing.assert_frame_equal(here.jobs, there.jobs)
        pd.testing.assert_frame_equal(here.records, there.records)
    first = forked[0].jobs.iloc[0]
    assert (first.job_id, first.state) == ("a-stray-folder", "corrupt") and "spec.json is missing" in first.error
