"""`python -m bench.run` as a user runs it: bad names, dry runs, a small real run."""

import subprocess
import sys

import pytest

from bench.run import main
from tests.conftest import TINY_ARCH


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--methods", "snipp"], "unknown method 'snipp'; accepted: "),
        (["--dataset", "mnist"], "unknown dataset 'mnist'; accepted: cifar10, cifar100, digits"),
        (["--arch", "resnet21"], "unknown arch 'resnet21'; accepted: "),
        (["--sparsity", "1.2"], "sparsity 1.2 is outside [0, 1)"),
        (["--grid", "nope"], "unknown grid 'nope'; accepted: "),
        (["--device", "tpu"], "unknown device 'tpu'; accepted: auto, cpu, cuda"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(flags, message, tmp_path, capsys):
    assert main([*flags, "--results", str(tmp_path), "--epochs", "1"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_dry_run_lists_jobs_without_running(tmp_path, capsys):
    from methods.registry import method_names

    if "imc-analysis" not in method_names():
        pytest.skip("the default grid runs at IMC's found sparsity: it needs imc-analysis (the IMC branch)")
    assert main(["--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pending  dense-digits-resnet20-dense-t0-" in out and "jobs, 0 done\n" in out
    assert "| total " in out.split("cost")[-1]  # the grid's cost follows the job list
    assert not (tmp_path / "jobs").exists()


def test_a_small_grid_runs_and_prints_the_summary(tmp_path):
    command = [sys.executable, "-m", "bench.run", "--methods", "dense,magnitude", "--arch", TINY_ARCH,
               "--dataset", "digits@300", "--epochs", "1", "--sparsity", "0.5", "--device", "cpu",
               "--results", str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[-2].startswith("| dense") and lines[-1].startswith("| magnitude")
    assert "| done" in lines[-1]
    rerun = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, timeout=300)
    assert "\n2 jobs, 2 done\n" in rerun.stdout
