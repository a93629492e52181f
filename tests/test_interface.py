"""The researcher's interface: --set and --describe, the recorded plan the report follows, progress and
log lines, Ctrl-C and closed pipes, the console script and packaging."""

import json
import math
import os
import signal
import subprocess
import sys
import tomllib
from io import StringIO
from pathlib import Path

import pytest

from bench.console import main as console_main
from bench.epoch_logs import EpochLine
from bench.grid import load_grid, override
from bench.progress import Progress, duration
from bench.provenance import git_state
from bench.run import main as run_main
from bench.settings_cli import apply_assignments, describe, grid_methods, parse_assignments, parse_value
from bench.spec import JobSpec
from bench.tables import number
from bench.train import EpochLog
from tests.conftest import TINY_ARCH
from tests.test_report import record, write_job

ROOT = Path(__file__).resolve().parent.parent


def planned_specs(*settings: str, methods: str = "dense,synflow,snip") -> dict[str, JobSpec]:
    grid = override(load_grid("default"), methods=tuple(methods.split(",")), sparsities=(0.5,))
    grid = apply_assignments(grid, parse_assignments(list(settings), grid_methods(grid)))
    return {job.spec.method: job.spec for job in grid.plan()}


def test_set_reaches_the_job_spec_with_the_dataclass_type():
    specs = planned_specs("train.lr=0.05", "train.batch_size=128", "hparams.iterations=10", "train.lr_drops=0.3,0.6")
    for spec in specs.values():
        assert spec.train["lr"] == 0.05 and spec.train["batch_size"] == 128
        assert tuple(spec.train["lr_drops"]) == (0.3, 0.6)
    assert specs["synflow"].hparams["iterations"] == 10  # the one method that has the setting
    assert "iterations" not in specs["snip"].hparams and "iterations" not in specs["dense"].hparams
    # an integer for a float field is stored as the float the dataclass holds: the same id as 0.1 written out
    assert planned_specs("train.lr=1")["dense"].train["lr"] == 1.0
    assert planned_specs("train.lr=0.1")["dense"].job_id == planned_specs()["dense"].job_id


def test_set_for_one_method_only():
    grid = override(load_grid("default"), methods=("imc-reinit", "imc-rewind"))
    plan = apply_assignments(grid, parse_assignments(["hparams.imc-reinit.slq_runs=4"], grid_methods(grid))).plan()
    jobs = {job.job_id: job for job in plan}
    reinit, rewind = (next(job for job in plan if job.spec.method == name) for name in ("imc-reinit", "imc-rewind"))
    assert reinit.spec.hparams["slq_runs"] == 4 and rewind.spec.hparams.get("slq_runs") != 4
    # the analysis the variant waits for runs with the variant's IMC settings; the other variant's does not
    assert jobs[reinit.after[0]].spec.hparams["slq_runs"] == 4
    assert jobs[rewind.after[0]].spec.hparams.get("slq_runs") != 4


def test_parse_value_reads_toml_literals():
    assert parse_value("0.05") == 0.05 and parse_value("true") is True and parse_value("[1, 2]") == [1, 2]
    assert parse_value("loss_based") == "loss_based" and parse_value("0.5,0.75") == [0.5, 0.75]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.lrr=1", "unknown --set key 'train.lrr'; accepted: train.epochs, train.lr,"),
        ("train.lr=abc", "training setting lr = 'abc' is not a float; accepted: a value of type float"),
        ("hparams.iterations=abc", "method synflow setting iterations = 'abc' is not a int"),
        ("hparams.nope=1", "no method of the grid has setting 'nope'; accepted: train.epochs"),
        ("hparams.lth-rewind.rewind_schedule=sideways", "rewind_schedule"),
        ("hparams.snipp.x=1", "unknown method 'snipp'; accepted: "),
        ("lr=0.1", "is not KEY=VALUE with a known key; accepted: train.epochs"),
        ("train.lr", "is not KEY=VALUE with a known key"),
    ],
)
def test_bad_set_is_one_line_exit_2(setting, message, tmp_path, capsys):
    code = run_main(["--methods", "dense,synflow", "--set", setting, "--results", str(tmp_path), "--dry-run"])
    error = capsys.readouterr().err
    assert code == 2 and message in error and error.count("\n") == 1, error
    assert not (tmp_path / "jobs").exists()


def test_describe_prints_defaults_and_help(capsys):
    assert run_main(["--describe", "train"]) == 0
    out = capsys.readouterr().out
    assert "train.lr" in out and "0.1" in out and "initial learning rate" in out
    text = describe("imc-reinit")
    assert "hparams.imc-reinit.slq_runs" in text and "SLQ runs (random start vectors)" in text and " 8 " in text
    assert "IMC-Reinitialization" in text
    assert "5,000 training images of cifar10" in describe("cifar10@5k") and "data_root" in describe("cifar10@5k")
    assert run_main(["--describe", "mnist"]) == 2
    assert "nothing to describe named 'mnist'; accepted: train, " in capsys.readouterr().err


def test_run_records_its_plan_and_the_report_reports_it(tmp_path):
    """The issue's example: a run that overrides the default grid, then a bare report of its results."""
    results = tmp_path / "r"
    command = [sys.executable, "-m", "bench.run", "--methods", "dense", "--epochs", "1", "--dataset", "digits",
               "--arch", TINY_ARCH, "--set", "train.lr=0.05", "--device", "cpu", "--results", str(results),
               "--log-every", "1"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert "1 jobs: 1 to run" in completed.stdout
    assert "[1/1] done   dense sparsity — (digits, resnet8, trial 0): accuracy " in completed.stdout
    assert "| 0 left" in completed.stdout
    # stderr is a pipe, not a terminal: one line per epoch with --log-every 1
    assert "train epoch 1: lr 0.005, train loss " in completed.stderr and "test acc " in completed.stderr
    plan = json.loads((results / "plan.json").read_text())
    (job_id,) = plan["runs"][0]["job_ids"]
    assert plan["runs"][0]["overrides"]["--set"] == ["train.lr=0.05"]
    spec = json.loads((results / "jobs" / job_id / "spec.json").read_text())["spec"]
    assert spec["train"] == {"epochs": 1, "lr": 0.05}

    report = subprocess.run([sys.executable, "-m", "bench.report", "--results", str(results)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert report.returncode == 0, report.stderr
    assert "(1 records from 1 jobs)" in report.stdout
    readme = (results / "report" / "README.md").read_text()
    assert "jobs: 1 in all, 1 done" in readme and "`--set train.lr=0.05`" in readme

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "1 jobs: 0 to run, 1 skipped as done" in rerun.stdout
    assert len(json.loads((results / "plan.json").read_text())["runs"]) == 1  # the same run is recorded once


def test_report_lists_job_folders_outside_the_plan_and_grid_chooses_another(tmp_path, capsys):
    from bench.grid import PlannedJob
    from bench.plans import record_plan
    from bench.report import main as report_main

    results = tmp_path / "results"
    planned = JobSpec(method="dense", dataset="cifar10@5k", arch="resnet20", trial=0)
    stray = JobSpec(method="dense", dataset="cifar10@5k", arch="resnet20", trial=7)
    write_job(results, planned, [record(planned, 0.8, 0.0)])
    write_job(results, stray, [record(stray, 0.7, 0.0)])
    record_plan(results, "default", {"--trials": 1}, [PlannedJob(planned)])
    assert report_main(["--results", str(results)]) == 0
    assert "(1 records from 1 jobs)" in capsys.readouterr().out
    readme = (results / "report" / "README.md").read_text()
    assert "## Job folders outside the reported jobs" in readme and f"`{stray.job_id}` (done)" in readme
    assert report_main(["--results", str(results), "--all-jobs", "--out", str(tmp_path / "all")]) == 0
    assert "(2 records from 2 jobs)" in capsys.readouterr().out
    assert report_main(["--results", str(results), "--grid", "default", "--out", str(tmp_path / "grid")]) == 0
    assert "wrote" in (out := capsys.readouterr().out) and "(0 records from" in out  # no job of that grid ran
    assert f"`{planned.job_id}` (done)" in (tmp_path / "grid" / "README.md").read_text()  # not in that grid


def test_small_values_in_scientific_notation():
    assert number(3.7e-06, 3) == "3.7e-06" and number(0.4, 2) == "0.40" and number(0.0, 2) == "0.00"
    from bench.tables import _cell

    assert _cell(2e-5, 1e-6, 2.1e-5, 2) == "2.0e-05 ± 1.0e-06 (paper 2.1e-05)"


def test_a_spread_of_float_rounding_reads_zero_and_a_real_one_does_not():
    import pandas as pd

    from bench.tables import spread

    assert spread(pd.Series([0.39999852341858133, 0.3999985234185813, 0.39999852341858133])) == 0.0
    assert spread(pd.Series([2.0e-5, 2.2e-5])) == pytest.approx(1.414e-6, rel=1e-3)  # small but real
    assert math.isnan(spread(pd.Series([0.4])))


def test_progress_counts_skipped_and_gives_an_eta(tmp_path):
    from bench.grid import PlannedJob

    done, first, second = (JobSpec(method="dense", dataset="cifar10@5k", arch="resnet20", trial=t) for t in range(3))
    write_job(tmp_path, done, [record(done, 0.8, 0.0)])
    lines, now = [], [0.0]
    progress = Progress([PlannedJob(spec) for spec in (done, first, second)], tmp_path, echo=lines.append,
                        clock=lambda: now[0])
    assert lines == ["3 jobs: 2 to run, 1 skipped as done"] and progress.skips(PlannedJob(done)) == "done"
    write_job(tmp_path, first, [record(first, 0.875, 0.0)])
    now[0] = 100.0
    progress.finished(PlannedJob(first), {"state": "done", "seconds": 95.0})
    assert lines[-1].startswith("[1/2] done   dense sparsity — (cifar10@5k, resnet20, trial 1): accuracy 87.50%")
    assert lines[-1].endswith("1m35s | 1 left, ETA 1m40s")
    now[0] = 130.0
    progress.finished(PlannedJob(second), {"state": "failed", "error": "diverged: loss nan", "seconds": 30.0})
    assert lines[-1].endswith("diverged: loss nan, 30s | 0 left")
    assert progress.summary() == "3 jobs: 1 skipped as done, 1 done, 1 failed; 2m10s"
    assert duration(7384) == "2h03m"


def test_epoch_line_every_n_epochs(tmp_path):
    stream = StringIO()
    log = EpochLog(tmp_path / "epochs.csv", [EpochLine("job-1", every=2, stream=stream)])
    for epoch in range(5):
        tested = epoch == 3  # epochs without a test pass have empty test columns
        log.append({"phase": "train", "epoch": epoch, "lr": 0.1, "train_loss": 1.0 / (epoch + 1),
                    "train_accuracy": 0.5, "test_loss": 1.2 if tested else None,
                    "test_accuracy": 0.25 if tested else None, "test_top5": None,
                    "sparsity": 0.0, "seconds": 1.5 * (epoch + 1)})
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["job-1 train epoch 2", "job-1 train epoch 4"]
    assert "train loss 0.5000" in lines[0] and "test" not in lines[0].split(":", 1)[1]
    assert "test acc 25.00%" in lines[1]
    assert len((tmp_path / "epochs.csv").read_text().splitlines()) == 6  # the CSV still has every epoch


def test_tensorboard_logs_every_epoch(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional extra prunebench[tensorboard] is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from bench.jobs import run_job
    from bench.spec import RunSettings
    from bench.store import write_spec

    spec = JobSpec(method="dense", dataset="digits@300", arch=TINY_ARCH, train={"epochs": 2, "eval_every": 1})
    status = run_job(write_spec(tmp_path, spec, RunSettings(device="cpu", progress=False, log=("tensorboard",))))
    assert status["state"] == "done"
    events = EventAccumulator(str(tmp_path / "jobs" / spec.job_id / "tensorboard"))
    events.Reload()
    accuracy = events.Scalars("train/test_accuracy")
    assert [event.step for event in accuracy] == [0, 1]
    metrics = json.loads((tmp_path / "jobs" / spec.job_id / "metrics.json").read_text())
    assert accuracy[-1].value == pytest.approx(metrics[0]["accuracy"])


def test_ctrl_c_is_one_line_that_says_the_run_resumes(tmp_path):
    command = [sys.executable, "-m", "bench.run", "--methods", "dense", "--epochs", "200", "--dataset", "digits@300",
               "--arch", TINY_ARCH, "--device", "cpu", "--results", str(tmp_path), "--log-every", "1"]
    # a suite started in the background by a shell inherits SIGINT ignored: the run gets it as a terminal would
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    first = process.stderr.readline()  # the first epoch line: training has started
    assert "epoch 1:" in first, first
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in rest and rest.strip().splitlines()[-1].startswith("interrupted: ")
    assert "rerun the same command to resume" in rest


def test_a_closed_pipe_is_quiet():
    process = subprocess.Popen([sys.executable, "-m", "bench.run", "--list-grids"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=ROOT)
    process.stdout.close()  # as `| head` does once it has its lines
    assert process.stderr.read() == b""
    assert process.wait(timeout=120) == 1


def test_console_script_dispatches_to_the_modules(tmp_path, capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"prunebench": "bench.console:main"}
    assert console_main([]) == 2 and "usage: prunebench {run,status,report,perf,check,records}" in capsys.readouterr().out
    assert console_main(["nope"]) == 2 and "accepted: run, status, report, perf, check, records" in capsys.readouterr().err
    assert console_main(["run", "--describe", "train"]) == 0 and "train.lr" in capsys.readouterr().out
    (tmp_path / "jobs").mkdir()
    assert console_main(["status", "--results", str(tmp_path)]) == 0 and "0 jobs" in capsys.readouterr().out


def test_packaging_says_what_works():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"  # tomllib, datetime.UTC
    dependencies = dict(item.split(">", 1) if ">" in item else (item, "") for item in project["dependencies"])
    assert dependencies["pandas"] == "=2.1"  # DataFrame.map
    assert dependencies["torch"].endswith(",<2.15") and dependencies["torchvision"].endswith(",<0.30")
    assert project["license"] == {"text": "MIT"} and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "../shared" not in (ROOT / "README.md").read_text()


def test_report_outputs_do_not_make_runs_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})

    (tmp_path / "reports" / "default").mkdir(parents=True)
    (tmp_path / "reports" / "default" / "README.md").write_text("old report\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "start")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "reports" / "default" / "README.md").write_text("regenerated report\n")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
