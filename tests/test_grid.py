"""Grids: the paper's grids load and count, modes/sweeps/vary/include expand as documented, "found"
jobs wait for the analysis job, filters select, defaults do not rename jobs, errors are one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import found
from bench.errors import BenchError
from bench.grid import grid_names, load_grid, matches, parse_filters, sweep_levels
from bench.spec import FOUND, JobSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
PAPER_GRIDS = ["table6-7", "table8-9", "table10-11", "table12-13", "main-cifar10", "main-imagenet", "full",
               "sensitivity", "lipschitz", "default"]
FULL_GRID_JOBS = 3333  # also stated in docs/grids.md (3,072 + 117 analyses of the sensitivity settings + 144 at
# the paper's sparsity: IMC's 3 variants in the four table grids, and the 6 one-shot methods in tables 6-7 and
# 12-13, whose paper s* is not a sweep level)
TABLE_GRID_JOBS = 462  # 2 archs x 3 trials x (dense + 6 x 11 levels + 3 LTH + 3 IMC x 2 + 1 analysis)


def grid_file(tmp_path: Path, text: str, name: str = "g") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


def dry_run(*args: str, plugins: bool = True) -> subprocess.CompletedProcess:
    env = os.environ | ({"PRUNEBENCH_PLUGINS": "tests.stand_ins"} if plugins else {})
    return subprocess.run([sys.executable, "-m", "bench.run", *args, "--dry-run"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def job_lines(stdout: str) -> list[str]:
    """The dry run's job lines and its count line ("N jobs, M done"), without its notes before them and
    the cost table after them."""
    lines = [line for line in stdout.splitlines() if not line.startswith("note: ")]
    end = next(index for index, line in enumerate(lines) if line.split(" jobs, ")[0].isdigit())
    return lines[:end + 1]


def test_every_paper_grid_is_listed() -> None:
    assert set(PAPER_GRIDS) <= set(grid_names())
    assert not [name for name in grid_names() if name.startswith("_")]
    listing = subprocess.run([sys.executable, "-m", "bench.run", "--list-grids"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=60).stdout
    assert all(name in listing for name in PAPER_GRIDS)


def test_full_grid_counts_the_whole_paper() -> None:
    """With the real methods where merged and stand-ins (tests/stand_ins.py) for the others."""
    result = dry_run("--grid", "full")
    assert result.returncode == 0, result.stderr
    listed = job_lines(result.stdout)
    assert listed[-1].startswith(f"{FULL_GRID_JOBS} jobs, ")
    assert f"{FULL_GRID_JOBS:,}" in (REPO_ROOT / "docs" / "grids.md").read_text()
    lines = [line for line in listed[:-1] if not line.startswith("not done:")]
    assert len(lines) == len(set(lines)) == FULL_GRID_JOBS
    table = job_lines(dry_run("--grid", "table8-9").stdout)
    assert table[-1].startswith(f"{TABLE_GRID_JOBS} jobs")
    lth = [line for line in table if " lth-rewind-" in line]
    assert len(lth) == 6 and all("-s0.5-" in line for line in lth), "one LTH job per trial/arch, at the sweep's top"
    snip = [line for line in table if " snip-cifar10@5k-resnet20-" in line and "-t0-" in line]
    assert len(snip) == 11 and any("-sfound-" in line and "(after imc-analysis-" in line for line in snip)
    imc = [line for line in table if " imc-reinit-" in line]
    assert len(imc) == 12 and all("(after imc-analysis-" in line for line in imc)
    assert sorted(line.split()[1].split("-")[4] for line in imc) == ["auto"] * 6 + ["s0.4"] * 3 + ["s0.5"] * 3
    analyses = [index for index, line in enumerate(table) if line.split()[1].startswith("imc-analysis-")]
    assert len(analyses) == 6 and max(analyses) < min(i for i, line in enumerate(table) if "(after" in line)


def test_paper_sparsity_resolves_per_dataset_and_arch(tmp_path: Path) -> None:
    """`paper` is the s* the paper reports for IMC on (dataset, arch): 0.40 for cifar10@5k ResNet-20 and
    0.50 for ResNet-32 (Table 8); every method that takes a sparsity runs there, IMC's variants included."""
    result = dry_run("--grid", "table8-9", "--sparsity", "paper", "--trials", "1")
    assert result.returncode == 0, result.stderr
    jobs = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("pending ")]
    levels = {(job.split("-cifar10@5k-")[0], job.split("-cifar10@5k-")[1].split("-")[0],
               job.split("-cifar10@5k-")[1].split("-")[1]) for job in jobs}
    for method in ("snip", "grasp", "imc-reinit", "imc-finetune", "lth-rewind", "continuous-sparsification"):
        assert (method, "resnet20", "s0.4") in levels and (method, "resnet32", "s0.5") in levels, method
    assert ("dense", "resnet20", "dense") in levels
    path = grid_file(tmp_path, 'methods = ["snip"]\ndatasets = ["digits"]\nsparsities = ["paper"]\n')
    refused = dry_run("--grid", path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "no found sparsity for digits/resnet20; accepted (dataset/arch): cifar100/resnet20" in refused.stderr
    assert "cifar10@5k/resnet32" in refused.stderr


def test_unregistered_method_fails_at_expansion_in_one_line(tmp_path: Path) -> None:
    path = grid_file(tmp_path, 'methods = ["dense", "no-such-method"]\ndatasets = ["digits"]\n')
    grid = load_grid(path)  # loading never needs the methods
    assert grid.parts[0].methods[1] == "no-such-method"
    result = dry_run("--grid", path, plugins=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "error: unknown method 'no-such-method'; accepted: " in result.stderr


def test_sweep_levels_are_exact() -> None:
    levels = sweep_levels(0.05, 0.5, 0.05)
    assert levels == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    with pytest.raises(BenchError):
        sweep_levels(0.5, 0.1, 0.05)


def test_modes_vary_and_blocks(tmp_path: Path) -> None:
    grid = load_grid(grid_file(tmp_path, """
methods = ["dense", "magnitude"]
datasets = ["digits"]
archs = ["resnet8", "resnet14"]
trials = 2
sparsities = [0.3, "sweep"]
sweep = [0.1, 0.2, 0.1]
[train]
epochs = 1

[[block]]
name = "levels"

[[block]]
name = "rounds"
modes = { magnitude = "rounds" }
vary = { "train.lr" = [0.05, 0.1], "hparams.finetune_lr_scale" = [0.5] }
methods = ["magnitude"]
"""))
    specs = grid.jobs()
    levels = [spec for spec in specs if spec.method == "magnitude" and not spec.train.get("lr")
              and not spec.hparams]
    assert sorted({spec.sparsity for spec in levels}) == [0.1, 0.2, 0.3]
    dense = [spec for spec in specs if spec.method == "dense"]
    assert len(dense) == 4 and all(spec.sparsity is None for spec in dense)
    rounds = [spec for spec in specs if spec.hparams]
    assert len(rounds) == 2 * 2 * 2 and {spec.sparsity for spec in rounds} == {0.3}
    assert {spec.train.get("lr") for spec in rounds} == {0.05, None}, "lr 0.1 is the default: dropped"
    assert len(specs) == len({spec.job_id for spec in specs}) == 4 + 12 + 8


def test_a_level_a_self_finding_method_does_not_run_at_is_said(tmp_path: Path) -> None:
    """IMC's variants find their own sparsity (mode "none"): a grid that lists them at 0.9 plans them at
    their s* only, and the run says so; a block giving them mode "levels" at 0.9 plans them there."""
    base = 'methods = ["imc-reinit", "snip"]\ndatasets = ["digits"]\nsparsities = [0.9]\n'
    asked = dry_run("--grid", grid_file(tmp_path, base, "asked"), "--results", str(tmp_path / "r"))
    assert asked.returncode == 0, asked.stderr
    notes = [line for line in asked.stdout.splitlines() if line.startswith("note: ")]
    assert notes == ["note: imc-reinit finds its own sparsity: grid 'asked' runs it at that s* (and at `paper` "
                     "where the grid asks for it), not at 0.9; mode \"levels\" ([modes] of the grid or a block) "
                     "runs it there"]
    levels = load_grid(grid_file(tmp_path, base + '\n[[block]]\n\n[[block]]\nmethods = ["imc-reinit"]\n'
                                 'modes = { imc-reinit = "levels" }\n', "planned"))
    assert levels.levels_not_planned(levels.jobs()) == []
    assert {spec.sparsity for spec in levels.jobs() if spec.method == "imc-reinit"} == {None, 0.9}


def test_defaults_do_not_rename_jobs_and_bad_settings_fail(tmp_path: Path) -> None:
    text = """
methods = ["magnitude"]
datasets = ["digits"]
archs = ["resnet8"]
sparsities = [0.5]
"""
    plain = load_grid(grid_file(tmp_path, text, "plain")).jobs()
    spelled = load_grid(grid_file(tmp_path, text + """
[train]
epochs = 160
[hparams.magnitude]
finetune_lr_scale = 0.1
""", "spelled")).jobs()
    assert [spec.job_id for spec in plain] == [spec.job_id for spec in spelled]
    with pytest.raises(BenchError, match="unknown setting"):
        load_grid(grid_file(tmp_path, text + "[hparams.magnitude]\nrewind = 3\n", "bad")).jobs()
    with pytest.raises(BenchError, match="unknown key"):
        load_grid(grid_file(tmp_path, text + "sparsity = 0.4\n", "typo"))


def test_found_jobs_wait_for_the_analysis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dependency logic is generic over `bench.found.analysis_spec` (here: a dense job)."""
    monkeypatch.setattr(found, "analysis_spec", lambda spec: JobSpec("dense", spec.dataset, spec.arch, spec.trial,
                                                                     train=spec.train))
    grid = load_grid(grid_file(tmp_path, """
methods = ["magnitude"]
datasets = ["digits"]
archs = ["resnet8"]
trials = 2
sparsities = ["found", 0.5]
"""))
    plan = grid.plan()
    assert [job.spec.method for job in plan] == ["dense", "dense", "magnitude", "magnitude", "magnitude",
                                                 "magnitude"]
    waiting = [job for job in plan if job.after]
    assert len(waiting) == 2 and all(job.spec.sparsity == FOUND for job in waiting)
    assert {job.after[0] for job in waiting} == {job.job_id for job in plan[:2]}
    only = grid.plan(parse_filters(["trial=1", "sparsity=found"]))
    assert [job.spec.method for job in only] == ["dense", "magnitude"], "a selected job keeps its dependency"


def test_filters() -> None:
    spec = JobSpec("magnitude", "digits", "resnet8", trial=1, sparsity=0.25, train={"lr": 0.01})
    assert matches(spec, parse_filters(["method=dense,magnitude", "sparsity=0.25", "train.lr=0.01"]))
    assert not matches(spec, parse_filters(["trial=0"]))
    assert matches(JobSpec("dense", "digits", "resnet8"), parse_filters(["sparsity=none"]))
    with pytest.raises(BenchError, match="unknown filter key"):
        parse_filters(["colour=red"])
    with pytest.raises(BenchError, match="not key=value"):
        parse_filters(["method"])


def test_include_deduplicates(tmp_path: Path) -> None:
    first = grid_file(tmp_path, 'methods = ["dense"]\ndatasets = ["digits"]\narchs = ["resnet8"]\ntrials = 2\n', "a")
    second = grid_file(tmp_path, 'methods = ["dense"]\ndatasets = ["digits"]\narchs = ["resnet8"]\ntrials = 3\n', "b")
    both = load_grid(grid_file(tmp_path, f'include = ["{first}", "{second}"]\n', "both"))
    assert len(both.jobs()) == 3
