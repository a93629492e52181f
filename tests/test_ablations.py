"""The sanity ablations (Frankle et al. 2021): they change what they claim and nothing else, enter the
job's id only when set, and are refused by methods that cannot take them."""

import pytest
import torch

from bench.ablations import shuffle_masks
from bench.errors import BenchError
from bench.grid import load_grid
from bench.jobs import make_context
from bench.masks import global_mask, keep_lowest
from bench.spec import JobSpec, RunSettings
from methods.registry import get_method
from tests.conftest import TINY_ARCH

SPARSITY = 0.7


def run(tmp_path, method: str, ablation: str):
    spec = JobSpec(method=method, dataset="digits@300", arch=TINY_ARCH, sparsity=SPARSITY, train={"epochs": 1},
                   hparams=dict(get_method(method).quick_hparams), ablation=ablation)
    context = make_context(spec, RunSettings(device="cpu", progress=False), tmp_path / ablation / "jobs" / spec.job_id,
                           tmp_path / ablation)
    records = context.run_method()
    return context, records


def test_default_ablation_keeps_the_job_id_and_a_set_one_changes_it():
    plain = JobSpec(method="snip", dataset="digits", arch="resnet20", sparsity=0.5)
    assert JobSpec(method="snip", dataset="digits", arch="resnet20", sparsity=0.5, ablation="none").job_id == plain.job_id
    assert "ablation" not in plain.canonical()
    shuffled = JobSpec(method="snip", dataset="digits", arch="resnet20", sparsity=0.5, ablation="shuffle")
    assert shuffled.job_id != plain.job_id and "-shuffle-" in shuffled.job_id


def test_unknown_ablation_and_refused_ablation_are_one_line_errors():
    with pytest.raises(BenchError, match="unknown ablation 'flip'; accepted: invert, none, reinit, shuffle"):
        JobSpec(method="snip", dataset="digits", arch="resnet20", sparsity=0.5, ablation="flip")
    with pytest.raises(BenchError, match="dense does not take ablation 'shuffle'; accepted: none"):
        from bench.grid import normalized

        normalized(JobSpec(method="dense", dataset="digits", arch="resnet20", ablation="shuffle"))


def test_shuffle_keeps_each_layer_count_and_moves_positions():
    masks = global_mask({"a": torch.arange(100.0).reshape(10, 10), "b": torch.arange(50.0)}, 0.6)
    shuffled = shuffle_masks(masks, seed=3)
    for name in masks:
        assert shuffled[name].sum() == masks[name].sum() and shuffled[name].shape == masks[name].shape
        assert not torch.equal(shuffled[name], masks[name])
    assert all(torch.equal(shuffled[name], shuffle_masks(masks, seed=3)[name]) for name in masks)


def test_keep_lowest_keeps_the_lowest_at_the_same_count():
    scores = {"a": torch.arange(10.0)}
    with keep_lowest() as ranking:
        inverted = global_mask(scores, 0.7)
    assert inverted["a"].tolist() == [1, 1, 1] + [0] * 7 and ranking.thresholds == 1
    assert global_mask(scores, 0.7)["a"].tolist() == [0] * 7 + [1, 1, 1]


def test_each_ablation_changes_the_snip_job_as_claimed(tmp_path):
    base, base_records = run(tmp_path, "snip", "none")
    base_model, base_masks = base.last_recorded
    results = {name: run(tmp_path, "snip", name) for name in ("shuffle", "reinit", "invert")}
    for name, (context, records) in results.items():
        _, masks = context.last_recorded
        assert records[0]["ablation"] == name
        assert abs(records[0]["achieved_sparsity"] - SPARSITY) < 1e-3
        for layer in masks:  # the per-layer counts of shuffle and reinit are the method's
            if name in ("shuffle", "reinit"):
                assert masks[layer].sum() == base_masks[layer].sum()
        same_masks = all(torch.equal(masks[layer], base_masks[layer]) for layer in masks)
        assert same_masks == (name == "reinit"), name
    # reinit trains other weights than theta_0 from the same mask: its trained net differs from none's
    reinit_model, _ = results["reinit"][0].last_recorded
    assert not torch.equal(reinit_model.conv.weight, base_model.conv.weight)
    assert base_records[0]["ablation"] == "none"


def test_an_ablation_that_changes_nothing_fails(tmp_path):
    spec = JobSpec(method="continuous-sparsification", dataset="digits@300", arch=TINY_ARCH, train={"epochs": 2},
                   hparams={"rounds": 1}, ablation="invert")
    context = make_context(spec, RunSettings(device="cpu", progress=False), tmp_path / "jobs" / spec.job_id, tmp_path)
    with pytest.raises(RuntimeError, match="ablation invert changed nothing"):
        context.run_method()


def test_ablations_grid_expands_every_method_and_ablation():
    jobs = load_grid("ablations").jobs()
    pruned = [spec for spec in jobs if spec.method != "dense"]
    assert {spec.ablation for spec in pruned} == {"none", "shuffle", "reinit", "invert"}
    assert len(pruned) == 3 * 4 * 2 * 2 and sum(spec.method == "dense" for spec in jobs) == 2
