"""Corrupt or wrong-shaped state in a results folder is detected on read, set aside or named in one
line, and never blocks the other jobs, the run, the status or the report (issue 18).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bench import run as bench_run
from bench import status as bench_status
from bench.atomic import save_checked
from bench.collect import collect
from bench.grid import PlannedJob
from bench.jobs import run_job
from bench.plans import record_plan, recorded_jobs
from bench.report import main as report_main
from bench.spec import JobSpec, RunSettings
from bench.stages import STAGES_FOLDER, StageSpec, obtain
from bench.store import CORRUPT, DONE, FAILED, job_dir, read_status, write_spec
from tests.conftest import TINY_ARCH, run_spec
from tests.conftest import tiny_dense as dense

RUN = RunSettings(device="cpu", progress=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A results folder with two done dense jobs (trials 0 and 1), copied by each test."""
    results = tmp_path_factory.mktemp("finished")
    for trial in (0, 1):
        assert run_spec(results, dense(trial=trial))["state"] == DONE
    return results


@pytest.fixture()
def results(finished, tmp_path) -> Path:
    copied = tmp_path / "results"
    shutil.copytree(finished, copied, symlinks=True)
    return copied


def report(results: Path, *extra: str) -> int:
    return report_main(["--results", str(results), "--all-jobs", "--out", str(results / "report"), *extra])


def test_metrics_of_the_wrong_shape_are_corrupt_everywhere_and_rerun(results, capsys):
    folder = job_dir(results, dense())
    (folder / "metrics.json").write_text('{"not": "a list"}')
    assert read_status(folder)["state"] == CORRUPT
    assert bench_status.main(["--results", str(results)]) == 0
    assert "1 corrupt" in capsys.readouterr().out
    assert report(results) == 0
    readme = (results / "report" / "README.md").read_text()
    assert "wrong shape" in readme and "1 done" in readme
    assert run_spec(results, dense())["state"] == DONE  # rerun: the records are written again
    assert isinstance(json.loads((folder / "metrics.json").read_text()), list)


def test_a_stage_result_of_the_wrong_shape_or_a_folder_is_set_aside_and_recomputed(tmp_path, capsys):
    stage = StageSpec("probe", {"what": "test"})
    folder = stage.folder(tmp_path)
    folder.mkdir(parents=True)
    save_checked(folder / "result.pt", [1, 2, 3])  # checksummed, but not a stage's value
    again = obtain(tmp_path, stage, lambda _: {"value": torch.zeros(2), "seconds": 0.0})
    assert again.computed_here and (folder / "result.pt.corrupt").exists()
    assert "wrong shape" in capsys.readouterr().err

    (folder / "result.pt.corrupt").unlink()
    (folder / "result.pt").unlink()
    (folder / "result.pt").mkdir()
    third = obtain(tmp_path, stage, lambda _: {"value": torch.ones(2), "seconds": 0.0})
    assert third.computed_here and (folder / "result.pt.corrupt").is_dir()
    assert torch.equal(third.value["value"], torch.ones(2))


def test_another_jobs_spec_in_a_folder_is_refused_then_set_aside(results):
    first, second = dense(), dense(trial=1)
    shutil.copy(job_dir(results, first) / "spec.json", job_dir(results, second) / "spec.json")
    (job_dir(results, second) / "status.json").unlink()
    status = run_job(job_dir(results, second) / "spec.json")
    assert status["state"] == FAILED and f"holds the spec of job {first.job_id}" in status["error"]
    rows = collect(results).jobs.set_index("job_id")
    assert rows.loc[second.job_id, "state"] == CORRUPT and first.job_id in rows.loc[second.job_id, "error"]

    write_spec(results, second, RUN)  # bench.run sets it aside and writes the job's own
    assert (job_dir(results, second) / "spec.json.corrupt").exists()
    assert run_job(job_dir(results, second) / "spec.json", retry_failed=True)["state"] == DONE


def test_a_done_job_without_spec_json_is_listed_by_all_jobs(results):
    (job_dir(results, dense(trial=1)) / "spec.json").unlink()
    jobs = collect(results).jobs.set_index("job_id")
    row = jobs.loc[dense(trial=1).job_id]
    assert row.state == CORRUPT and "spec.json is missing (state done)" in row.error


@pytest.mark.parametrize("name", ["jobs", "stages"])
def test_jobs_or_stages_as_a_file_is_one_line(name, tmp_path, capsys):
    (tmp_path / name).write_text("not a folder")
    code = bench_run.main(["--methods", "dense", "--dataset", "digits@300", "--arch", TINY_ARCH, "--epochs", "1",
                           "--device", "cpu", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / name} is not a folder" in err and len(err.strip().splitlines()) == 1
    assert bench_status.main(["--results", str(tmp_path)]) == 0


def test_a_plan_of_the_wrong_shape_is_named_by_the_report_and_set_aside_by_the_run(results, capsys):
    (results / "plan.json").write_text('{"runs": "no", "jobs": []}')
    assert report_main(["--results", str(results), "--out", str(results / "report")]) == 2
    err = capsys.readouterr().err
    assert "plan.json is not a plan (wrong shape)" in err and len(err.strip().splitlines()) == 1
    record_plan(results, "default", {}, [PlannedJob(dense())])
    assert (results / "plan.json.corrupt").exists()
    assert [job.job_id for job in recorded_jobs(results)] == [dense().job_id]


def test_a_corrupt_rewind_state_restarts_the_continuous_sparsification_search(tmp_path, capsys):
    def cs(sparsity):
        return JobSpec(method="continuous-sparsification", dataset="digits@300", arch=TINY_ARCH, sparsity=sparsity,
                       train={"epochs": 2})

    assert run_spec(tmp_path, cs(None))["state"] == DONE
    (stage,) = [path for path in (tmp_path / STAGES_FOLDER).iterdir() if (path / "rewind_state.pt").exists()]
    (stage / "result.pt").unlink()  # the search must be read again from its folder
    (stage / "rewind_state.pt").write_bytes(b"torn")
    assert run_spec(tmp_path, cs(0.3))["state"] == DONE
    assert "no readable rewind_state.pt; restarting the search" in capsys.readouterr().err
    assert (stage / "rewind_state.pt.corrupt").exists()
