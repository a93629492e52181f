"""Exact-count thresholding, achieved sparsity, compression and the per-layer table."""

import pytest
import torch
from torch import nn

from bench.masks import (
    apply_masks,
    global_mask,
    keep_count,
    layer_table,
    layerwise_mask,
    magnitude_scores,
    prunable_parameters,
    sparsity_report,
    uniform_layerwise_mask,
)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def test_prunable_set_is_conv_and_linear_weights_only():
    assert list(prunable_parameters(tiny_net())) == ["0.weight", "3.weight"]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_global_mask_keeps_exact_count_of_highest_scores(sparsity):
    model = tiny_net()
    scores = magnitude_scores(model)
    masks = global_mask(scores, sparsity)
    total = sum(mask.numel() for mask in masks.values())
    assert int(sum(mask.sum() for mask in masks.values())) == keep_count(total, sparsity)
    kept = torch.cat([scores[name][masks[name] == 1] for name in masks])
    pruned = torch.cat([scores[name][masks[name] == 0] for name in masks])
    if kept.numel() and pruned.numel():
        assert kept.min() >= pruned.max()


def test_ties_are_broken_deterministically_and_exactly():
    scores = {"a": torch.ones(10), "b": torch.ones(10)}
    masks = global_mask(scores, 0.25)
    assert int(masks["a"].sum() + masks["b"].sum()) == 15
    assert all(torch.equal(masks[name], global_mask(scores, 0.25)[name]) for name in masks)


def test_pruned_weights_stay_pruned_under_current_mask():
    model = tiny_net()
    first = global_mask(magnitude_scores(model), 0.5)
    reversed_scores = {name: -score for name, score in magnitude_scores(model).items()}
    second = global_mask(reversed_scores, 0.7, current=first)
    for name in first:
        assert torch.all(second[name] <= first[name])
    report = sparsity_report(model, second)
    assert report.sparsity == pytest.approx(0.7, abs=1 / report.prunable)


def test_layerwise_masks_hit_each_layer_density():
    model = tiny_net()
    masks = layerwise_mask(magnitude_scores(model), {"0.weight": 0.5, "3.weight": 0.1})
    assert int(masks["0.weight"].sum()) == 18 and int(masks["3.weight"].sum()) == 72
    uniform = uniform_layerwise_mask(magnitude_scores(model), 0.75)
    assert [row["sparsity"] for row in layer_table(uniform)] == pytest.approx([0.75, 0.75])


def test_report_counts_whole_model_compression():
    model = tiny_net()
    masks = global_mask(magnitude_scores(model), 0.5)
    report = sparsity_report(model, masks)
    total = sum(parameter.numel() for parameter in model.parameters())
    prunable = 36 + 720
    assert (report.prunable, report.total_parameters) == (prunable, total)
    assert report.compression == pytest.approx(total / (total - prunable // 2))
    assert report.density == pytest.approx(0.5)
    assert sparsity_report(model, None).sparsity == 0.0


def test_apply_masks_zeroes_exactly_the_pruned_weights():
    model = tiny_net()
    masks = global_mask(magnitude_scores(model), 0.6)
    apply_masks(model, masks)
    for name, weight in prunable_parameters(model).items():
        assert torch.equal(weight == 0, masks[name] == 0)


def test_flops_count_conv_and_linear_macs_scaled_by_density():
    from bench.flops import layer_macs, pruned_macs

    model = tiny_net()  # conv 1->4, 3x3 on 8x8 -> 4x6x6 outputs of 9 MACs; linear 144 -> 5
    macs = layer_macs(model, (1, 8, 8))
    assert macs == {"0.weight": 4 * 36 * 9, "3.weight": 144 * 5}
    masks = layerwise_mask(magnitude_scores(model), {"0.weight": 0.5, "3.weight": 0.25})
    assert pruned_macs(macs, masks) == pytest.approx(0.5 * 1296 + 0.25 * 720)
    assert pruned_macs(macs, None) == 1296 + 720
