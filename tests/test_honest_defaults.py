"""No silent weak defaults, no pooled settings, no ignored flags (issue 18): cheap settings only where
asked for and said, iterative methods that cannot reach their sparsity refused before training, a
data-dependent pruner without data refused, jobs of different settings kept apart in the report and
the run's summary, flags the executor would ignore refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import api
from bench import run as bench_run
from bench.errors import BenchError
from bench.models import ModelInput, build_model
from bench.report import main as report_main
from tests.conftest import TINY_ARCH

SYNFLOW = ["--methods", "synflow", "--dataset", "digits@300", "--arch", TINY_ARCH, "--epochs", "1",
           "--sparsity", "0.5", "--device", "cpu"]


def planned_hparams(results: Path) -> list[dict]:
    jobs = json.loads((results / "plan.json").read_text())["jobs"]
    return sorted((entry["spec"]["hparams"] for entry in jobs.values()), key=len)


def test_named_methods_get_full_defaults_quick_is_said_and_the_two_are_never_pooled(tmp_path, capsys):
    results = tmp_path / "results"
    assert bench_run.main([*SYNFLOW, "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert not out.startswith("quick settings") and "| defaults" in out
    assert planned_hparams(results) == [{}]

    assert bench_run.main([*SYNFLOW, "--quick", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("quick settings: grid 'default' runs each method's cheap quick_hparams")
    assert "synflow: iterations=5" in out.splitlines()[0] and "| iterations=5" in out
    assert planned_hparams(results) == [{}, {"iterations": 5}]

    assert report_main(["--results", str(results), "--out", str(tmp_path / "report")]) == 0
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| synflow (iterations=5) " in readme and "| synflow (iterations=default) " in readme
    assert "cheap quick settings (`quick_hparams`)" in readme


def test_the_bare_default_run_says_it_is_quick_in_its_first_line(tmp_path, capsys):
    """Its dry run also asks every planned job's method (`preflight.check_jobs`), as the run does: the
    quick LTH settings reach the grid's 0.5 (a quick `rounds = 2` reached 0.19 and failed the bare run)."""
    assert bench_run.main(["--dry-run", "--results", str(tmp_path / "results")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("quick settings: grid 'default'") and "lth-reinit: pruning_fraction=0.3" in first


def test_an_iterative_method_that_cannot_reach_its_sparsity_fails_before_training(tmp_path, capsys):
    argv = ["--methods", "lth-reinit", "--dataset", "digits@300", "--arch", TINY_ARCH, "--epochs", "1",
            "--sparsity", "0.9", "--set", "hparams.lth-reinit.rounds=2", "--device", "cpu",
            "--results", str(tmp_path / "results")]
    for dry_run in (["--dry-run"], []):  # the dry run refuses the plan the run would refuse
        assert bench_run.main(argv + dry_run) == 2
        err = capsys.readouterr().err
        assert "lth-reinit with rounds = 2" in err and "reaches sparsity 0.190, not the requested 0.9" in err
        assert "as many as needed: 22" in err
        assert not (tmp_path / "results" / "jobs").exists()


def test_a_sparse_training_schedule_fitted_to_a_short_job_is_said_or_refused_before_training(tmp_path, capsys):
    """delta-T = 100 leaves no update in a 1-epoch job of 300 digits (3 iterations, T_end = 2): the launch
    says the fitted interval (set and rigl, not gmp, whose schedule is in fractions of training), and
    `short_job_updates = 0` refuses the plan, dry run and run alike, before any job folder."""
    argv = ["--methods", "gmp,set,rigl", "--dataset", "digits@300", "--arch", TINY_ARCH, "--epochs", "1",
            "--sparsity", "0.9", "--device", "cpu", "--results", str(tmp_path / "results")]
    assert bench_run.main(argv + ["--dry-run"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert [note.split(":")[1].strip() for note in notes] == ["set", "rigl"]
    assert "leaves no mask update in the 2 iterations before T_end of this 3-iteration job; it updates every 2" in notes[1]
    for dry_run in (["--dry-run"], []):
        assert bench_run.main(argv + ["--set", "hparams.rigl.short_job_updates=0"] + dry_run) == 2
        assert "accepted: --set hparams.rigl.short_job_updates=N with N >= 1" in capsys.readouterr().err
        assert not (tmp_path / "results" / "jobs").exists()


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_a_data_dependent_pruner_without_batches_is_an_error(method):
    model = build_model(TINY_ARCH, ModelInput(1, 10, 8), seed=0)
    with pytest.raises(BenchError, match=f"method '{method}' scores the weights on data, but no batches"):
        api.prune(model, method, 0.9)
    batch = (torch.randn(20, 1, 8, 8), torch.arange(20) % 10)
    masks = api.prune(model, method, 0.9, batches=[batch])
    kept = sum(mask.sum().item() for mask in masks.values())
    assert kept == pytest.approx(0.1 * sum(mask.numel() for mask in masks.values()), abs=2)


@pytest.mark.parametrize("flags, message", [
    (["--workers", "3"], "--workers sizes the local pool, which --executor inline does not use"),
    (["--executor", "local", "--partition", "gpu"], "--partition only apply to --executor slurm, not local"),
    (["--executor", "local", "--mem-gb", "64", "--time-min", "30"], "--mem-gb, --time-min only apply"),
    (["--time-min", "30"], "--time-min only apply to --executor slurm, not inline"),
])
def test_flags_the_executor_ignores_are_refused(flags, message, tmp_path, capsys):
    assert bench_run.main([*SYNFLOW, *flags, "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
