"""Every grid key, setting, plugin and data file is checked before any work: one line naming the bad
value and what is accepted, exit 2, no job folder written (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import run as bench_run
from bench.data import DataSettings, load_dataset
from bench.errors import BenchError
from bench.grid import load_grid
from methods import registry
from tests.conftest import TINY_ARCH

BASE = ["--dataset", "digits@300", "--arch", TINY_ARCH, "--epochs", "2", "--device", "cpu"]


def one_line_error(argv: list[str], results: Path, capsys) -> str:
    code = bench_run.main([*argv, "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (results / "jobs").exists()
    return err


@pytest.mark.parametrize("body, named", [
    ('methods = ["dense"]\nsparsities = 0.5', "sparsities = 0.5"),
    ('methods = "dense"', "methods = 'dense'"),
    ('methods = ["dense"]\nablations = "shuffle"', "ablations = 'shuffle'"),
    ('methods = ["dense"]\nquick = "yes"', "quick = 'yes'"),
    ('methods = ["dense"]\nmodes = "levels"', "modes = 'levels'"),
    ('methods = ["dense"]\n[vary]\n"train.lr" = 0.1', "vary = "),
    ('methods = ["dense"]\n[train]\nlr_drops = 0.5', "lr_drops = 0.5 is not a list"),
    ('methods = ["dense"]\ntrials = 1000000000', "trials = 1000000000"),
    ('include = "x"', "include = 'x'"),
    ('methods = ["snip"]\nsparsities = ["sweep"]\nsweep = [0.0, 0.9, 1e-9]', "levels; accepted: at most"),
    ('methods = ["dense"]\ntrials = 10\n[vary]\n"train.lr" = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n'
     '"train.momentum" = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.0]\n'
     '"train.batch_size" = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"train.eval_every" = [1, 2, 3]', "jobs; accepted: at most"),
])
def test_grid_keys_of_the_wrong_type_or_size_are_one_line(body, named, tmp_path, capsys):
    grid = tmp_path / "bad.toml"
    grid.write_text(body + "\n")
    err = one_line_error(["--grid", str(grid), "--dry-run"], tmp_path / "results", capsys)
    assert named in err


def test_an_include_cycle_is_one_line(tmp_path):
    (tmp_path / "a.toml").write_text(f'include = ["{tmp_path / "b.toml"}"]\n')
    (tmp_path / "b.toml").write_text(f'include = ["{tmp_path / "a.toml"}"]\nmethods = ["dense"]\n')
    with pytest.raises(BenchError, match="includes itself through"):
        load_grid(str(tmp_path / "a.toml"))


@pytest.mark.parametrize("assignment, named", [
    ("train.lr=nan", "lr = nan"),
    ("train.momentum=inf", "momentum = inf"),
    ("train.weight_decay=-inf", "weight_decay"),
    ("train.lr_drops=[0.5,1.5]", "lr_drops = (0.5, 1.5); accepted: numbers in [0.0, 1.0]"),
    ("train.epochs=100000000000000", "epochs = 100000000000000"),
    ("train.lr=0.1\nmomentum=0.5", "line break"),
    ("hparams.synflow.iterations=-3", "iterations = -3"),
])
def test_settings_out_of_range_are_one_line(assignment, named, tmp_path, capsys):
    err = one_line_error([*BASE, "--methods", "synflow", "--sparsity", "0.5", "--set", assignment, "--dry-run"],
                         tmp_path / "results", capsys)
    assert named in err


def test_settings_that_fail_only_at_run_time_are_refused_before_work(tmp_path, capsys):
    err = one_line_error([*BASE, "--methods", "lth-rewind", "--sparsity", "0.5", "--set",
                          "hparams.lth-rewind.rewind_epoch=5"], tmp_path / "results", capsys)
    assert "rewind_epoch = 5 is past" in err
    err = one_line_error([*BASE, "--methods", "lth-reinit", "--sparsity", "0.9", "--set",
                          "hparams.lth-reinit.rounds=2"], tmp_path / "results", capsys)
    assert "reaches sparsity 0.190, not the requested 0.9" in err


@pytest.mark.parametrize("source, named", [
    (None, "ModuleNotFoundError"),
    ("raise RuntimeError('plugin broke')", "RuntimeError: plugin broke"),
    ("from methods.registry import register\nfrom baselines.dense import Dense\n"
     "register('snip')(type('Again', (Dense,), {}))", "registered twice"),
])
def test_a_plugin_that_fails_names_its_module(source, named, tmp_path, monkeypatch):
    if source is not None:
        (tmp_path / "broken_plugin.py").write_text(source + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.PLUGINS_VARIABLE, "broken_plugin")
    monkeypatch.setattr(registry, "_loaded", False)
    with pytest.raises(BenchError, match=f"plugin 'broken_plugin' .*module 'broken_plugin'.*{named}"):
        registry.load_plugins()


def image_root(root: Path) -> Path:
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for index in range(2):
                Image.fromarray(np.full((8, 8, 3), index * 50, np.uint8)).save(root / split / label / f"{index}.png")
    return root


@pytest.mark.parametrize("damage, named", [
    (lambda root: (root / "train" / "a" / "0.png").write_bytes(b""), "train/a/0.png cannot be decoded"),
    (lambda root: (root / "train" / "a" / "0.png").write_bytes((root / "train" / "a" / "1.png").read_bytes()[:40]),
     "train/a/0.png cannot be decoded"),
    (lambda root: [path.unlink() for path in (root / "test" / "b").iterdir()], "test"),
    (lambda root: ((root / "train" / "b" / "0.png").unlink(), (root / "notes.txt").write_text("hello"),
                   (root / "train" / "b" / "0.png").symlink_to(root / "notes.txt")), "train/b/0.png cannot be decoded"),
])
def test_a_bad_image_or_an_empty_class_names_the_file(damage, named, tmp_path):
    root = image_root(tmp_path / "images")
    damage(root)
    with pytest.raises(BenchError, match=named):
        load_dataset("imagefolder", DataSettings(data_root=str(root), image_size=8))
