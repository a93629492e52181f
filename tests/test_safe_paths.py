"""No write or read under a results folder follows a link out of it (issue 18, the critical class).

Each test plants a link in a real results folder, as a folder someone sends you could hold, then runs
the command that would follow it, and checks that the file outside is untouched and that one line
names the link.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from bench import status as bench_status
from bench.figures import save
from bench.jobs import run_job
from bench.report import main as report_main
from bench.safe_paths import LinkOutError, check_inside, open_no_follow
from bench.spec import RunSettings
from bench.store import CORRUPT, DONE, FAILED, job_dir, job_lock, read_status, write_spec
from bench.train import TrainSettings
from bench.trajectory import trajectory_stage
from tests.conftest import run_spec
from tests.conftest import tiny_dense as dense

PRECIOUS = "precious\n"
RUN = RunSettings(device="cpu", progress=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A results folder with one done dense job (copied by each test that changes it)."""
    results = tmp_path_factory.mktemp("finished")
    assert run_spec(results, dense())["state"] == DONE
    return results


def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text(PRECIOUS)
    return path


def copy(finished: Path, tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(finished, results, symlinks=True)
    return results


def test_a_lock_linked_out_is_never_truncated_and_fails_the_job(tmp_path, capsys):
    target = victim(tmp_path)
    folder = write_spec(tmp_path / "results", dense(), RUN).parent
    (folder / "lock").symlink_to(target)
    status = run_job(folder / "spec.json")
    assert target.read_text() == PRECIOUS
    assert status["state"] == FAILED and f"{folder / 'lock'}" in status["error"]
    assert "link" in capsys.readouterr().out
    with pytest.raises(LinkOutError):  # the primitive itself
        with job_lock(folder):
            pass


def test_a_figure_linked_out_fails_the_report_and_the_victim_stays(finished, tmp_path, capsys):
    results, target = copy(finished, tmp_path), victim(tmp_path)
    figures = results / "report" / "figures"
    figures.mkdir(parents=True)
    link = figures / "accuracy-vs-density-digits@300-resnet8.png"
    link.symlink_to(target)
    assert report_main(["--results", str(results), "--all-jobs", "--out", str(results / "report")]) == 2
    err = capsys.readouterr().err
    assert str(link) in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == PRECIOUS


def test_a_figure_is_saved_over_a_link_not_through_it(tmp_path):
    target = victim(tmp_path)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "curve.png").symlink_to(target)
    figure = plt.figure()
    paths = save(figure, tmp_path / "figures", "curve")
    assert target.read_text() == PRECIOUS
    assert not paths[0].is_symlink() and paths[0].read_bytes().startswith(b"\x89PNG")


def test_the_report_folder_as_a_link_out_is_refused(finished, tmp_path, capsys):
    results = copy(finished, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (results / "report").symlink_to(elsewhere)
    assert report_main(["--results", str(results), "--all-jobs", "--out", str(results / "report")]) == 2
    assert "report" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


def test_a_job_folder_linked_out_fails_that_job_and_nothing_is_written_there(tmp_path, capsys):
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (results / "jobs").mkdir(parents=True)
    job = dense()
    (results / "jobs" / job.job_id).symlink_to(elsewhere)
    path = write_spec(results, job, RUN)
    status = run_job(path)
    assert status["state"] == FAILED and "leads through a link to" in status["error"]
    assert list(elsewhere.iterdir()) == []
    assert read_status(job_dir(results, job))["state"] != DONE  # read through nothing either


def test_a_dangling_epochs_csv_link_in_a_stage_creates_nothing_outside(tmp_path):
    job = dense()
    stage = trajectory_stage(job, TrainSettings(**job.train)).folder(tmp_path)
    stage.mkdir(parents=True)
    outside = tmp_path.parent / f"{tmp_path.name}-created-outside.csv"
    (stage / "epochs.csv").symlink_to(outside)
    status = run_spec(tmp_path, job)
    assert status["state"] == FAILED and "epochs.csv" in status["error"] and "link" in status["error"]
    assert not outside.exists()


def test_metrics_linked_out_are_not_read_into_the_report(finished, tmp_path, capsys):
    results = copy(finished, tmp_path)
    folder = job_dir(results, dense())
    outside = tmp_path / "outside.json"
    (folder / "metrics.json").replace(outside)
    (folder / "metrics.json").symlink_to(outside)
    assert read_status(folder)["state"] == CORRUPT
    assert bench_status.main(["--results", str(results)]) == 0
    assert "1 corrupt" in capsys.readouterr().out
    assert report_main(["--results", str(results), "--all-jobs", "--out", str(tmp_path / "out")]) == 0
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "(corrupt)" in readme and "is a link" in readme
    assert not (tmp_path / "out" / "records.csv").exists()


def test_status_reads_no_job_folder_through_a_link_out(finished, tmp_path, capsys):
    """`bench.status` asks the link check only of folders its one directory read does not show as plain
    (`store.listed_job_folders`): a job folder, or `jobs/` itself, linked out of the results folder is
    corrupt, never done."""
    results = copy(finished, tmp_path)
    folder = job_dir(results, dense())
    outside = tmp_path / "outside-job"
    folder.replace(outside)
    folder.symlink_to(outside, target_is_directory=True)
    assert bench_status.main(["--results", str(results)]) == 0
    assert "1 corrupt" in capsys.readouterr().out
    folder.unlink()
    outside.replace(folder)
    jobs = folder.parent
    jobs.replace(tmp_path / "outside-jobs")
    jobs.symlink_to(tmp_path / "outside-jobs", target_is_directory=True)
    assert bench_status.main(["--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "1 corrupt" in out and "leads through a link to" in out and "1 done" not in out


def test_the_primitives_refuse_links_out(tmp_path):
    target = victim(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / "inside").symlink_to(target)
    with pytest.raises(LinkOutError, match="leads through a link"):
        check_inside(root / "inside", root)
    with pytest.raises(LinkOutError, match="is a link"):
        open_no_follow(root / "inside", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    assert target.read_text() == PRECIOUS
