"""SNIP, GraSP, SynFlow, smart ratios and Flow&Prune's round fractions, checked against independent
computations on tiny nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from baselines.flow_prune import remaining_fraction
from baselines.grasp import grasp_mask, grasp_scores
from baselines.sanity_check import (
    SanityCheck,
    SanityCheckSettings,
    classifier_name,
    has_residual_blocks,
    smart_ratio_counts,
)
from baselines.snip import snip_scores
from baselines.synflow import linearized_copy, synflow_mask, synflow_scores
from bench.errors import BenchError
from bench.masks import keep_count, prunable_parameters
from bench.models import ModelInput, build_model


def small_conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))


def labelled_batch(count: int, shape: tuple[int, ...], classes: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((count, *shape), generator=generator), torch.randint(0, classes, (count,), generator=generator)


def test_snip_scores_are_abs_gradient_times_weight_in_eval_mode():
    model = small_conv_net()
    with torch.no_grad():  # running statistics far from 0/1, so that train-mode BN would give other gradients
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(3.0)
    batch = labelled_batch(8, (1, 6, 6), 4)
    scores = snip_scores(model, [batch])
    assert model.training  # the mode is restored
    reference = small_conv_net()
    reference.load_state_dict(model.state_dict())
    reference.eval()
    F.cross_entropy(reference(batch[0]), batch[1]).backward()
    for name, weight in prunable_parameters(reference).items():
        torch.testing.assert_close(scores[name], (weight.grad * weight).abs().detach())
    assert all(weight.grad is None for weight in prunable_parameters(model).values())


def test_grasp_removes_the_highest_minus_theta_hessian_gradient():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    halves = [labelled_batch(6, (4,), 3, seed) for seed in (1, 2)]
    halves = [(images.double(), labels) for images, labels in halves]
    temperature = 2.0
    names = list(prunable_parameters(model))
    shapes = [prunable_parameters(model)[name].shape for name in names]
    flat = torch.cat([prunable_parameters(model)[name].detach().reshape(-1) for name in names])

    def total_loss(flat_weights: torch.Tensor) -> torch.Tensor:
        weights, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            weights[name] = flat_weights[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return sum(F.cross_entropy(torch.func.functional_call(model, weights, (images,)) / temperature, labels)
                   for images, labels in halves)

    gradient = torch.autograd.functional.jacobian(total_loss, flat)
    hessian = torch.autograd.functional.hessian(total_loss, flat)
    expected = -flat * (hessian @ gradient)
    scores = grasp_scores(model, halves, temperature)
    torch.testing.assert_close(torch.cat([scores[name].reshape(-1) for name in names]), expected)
    removed_count = 10
    masks = grasp_mask(scores, removed_count / flat.numel())
    removed = torch.cat([masks[name].reshape(-1) for name in names]) == 0
    assert set(torch.nonzero(removed).flatten().tolist()) == set(expected.topk(removed_count).indices.tolist())


def test_synflow_matches_closed_form_synaptic_flow_of_a_two_layer_linear_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.uniform_(0.1, 1.0)
        model[1].weight.uniform_(0.1, 1.0)
    first, second = model[0].weight.detach().double(), model[1].weight.detach().double()
    scores = synflow_scores(linearized_copy(model), (3,))
    # R = 1^T W2 W1 1: dR/dW1[i, j] = sum_k W2[k, i]; dR/dW2[k, i] = sum_j W1[i, j]
    torch.testing.assert_close(scores["0.weight"], first * second.sum(0)[:, None])
    torch.testing.assert_close(scores["1.weight"], second * first.sum(1)[None, :])
    with torch.no_grad():  # signs do not matter: linearize takes absolute values
        model[0].weight.neg_()
    torch.testing.assert_close(synflow_scores(linearized_copy(model), (3,))["0.weight"], first * second.sum(0)[:, None])


def test_synflow_scores_of_resnet32_are_finite_in_float64_where_float32_overflows():
    model = build_model("resnet32", ModelInput(3, 10, 32), seed=0)
    positive = linearized_copy(model)
    scores = synflow_scores(positive, (3, 32, 32))
    assert all(bool(torch.isfinite(score).all()) for score in scores.values())
    float32_scores = synflow_scores(positive.float(), (3, 32, 32))
    assert not all(bool(torch.isfinite(score).all()) for score in float32_scores.values())


def test_synflow_mask_is_exact_and_keeps_pruned_weights_pruned():
    model = build_model("resnet8", ModelInput(1, 10, 8), seed=0)
    masks = synflow_mask(model, (1, 8, 8), 0.9, iterations=4)
    total = sum(mask.numel() for mask in masks.values())
    assert int(sum(mask.sum() for mask in masks.values())) == keep_count(total, 0.9)
    fewer_steps = synflow_mask(model, (1, 8, 8), 0.9, iterations=1)
    assert any(not torch.equal(masks[name], fewer_steps[name]) for name in masks)  # iterating changes the mask


@pytest.mark.parametrize("sparsity", [0.1, 0.4, 0.9, 0.98])
def test_smart_ratios_sum_exactly_and_decrease_with_depth(sparsity):
    model = build_model("resnet20", ModelInput(3, 10, 32), seed=0)
    sizes = {name: weight.numel() for name, weight in prunable_parameters(model).items()}
    classifier = classifier_name(model)
    counts = smart_ratio_counts(sizes, classifier, sparsity, 0.3)
    assert sum(counts.values()) == keep_count(sum(sizes.values()), sparsity)
    assert counts[classifier] == int(0.3 * sizes[classifier])
    convs = [name for name in sizes if name != classifier]
    for earlier, later in zip(convs, convs[1:], strict=False):  # up to the one weight rounding may add
        assert counts[later] / sizes[later] <= counts[earlier] / sizes[earlier] + 1.0 / sizes[later]
    assert counts[convs[0]] / sizes[convs[0]] > counts[convs[-1]] / sizes[convs[-1]]
    assert all(0 <= counts[name] <= sizes[name] for name in sizes)


def test_smart_ratios_on_vgg_follow_the_official_rule_for_plain_networks():
    """Official `SmartRatio` for every arch but resnet: conv l keeps p_l = k ((L-l+1)^2 + (L-l+1)) / l^2."""
    model = build_model("vgg11", ModelInput(3, 10, 32), seed=0)
    assert not has_residual_blocks(model) and has_residual_blocks(build_model("resnet20", ModelInput(3, 10, 32), 0))
    sizes = {name: weight.numel() for name, weight in prunable_parameters(model).items()}
    classifier, layers = classifier_name(model), len(sizes)
    counts = smart_ratio_counts(sizes, classifier, 0.98, 0.3, "plain")
    assert sum(counts.values()) == keep_count(sum(sizes.values()), 0.98)
    convs = [name for name in sizes if name != classifier]
    # the first conv saturates (keeps all) and carries its overflow into the second; the rest keep k r_l / l^2
    assert counts[convs[0]] == sizes[convs[0]] and counts[convs[1]] < sizes[convs[1]]
    scaled = [counts[name] / sizes[name] * position**2 / ((layers - position + 1) ** 2 + (layers - position + 1))
              for position, name in enumerate(convs, start=1) if position > 2]
    assert max(scaled) == pytest.approx(min(scaled), rel=0.01)
    assert counts != smart_ratio_counts(sizes, classifier, 0.98, 0.3, "resnet")
    # "auto" picks the plain rule for VGG
    masks = SanityCheck(SanityCheckSettings()).prune(model, [], 0.98, seed=1, input_shape=None)
    assert {name: int(mask.sum()) for name, mask in masks.items()} == counts
    with pytest.raises(BenchError, match="layer_ratios = 'vgg'; accepted: auto, resnet, plain"):
        SanityCheckSettings(layer_ratios="vgg")


def test_flow_prune_round_fractions_follow_section_5():
    rounds, sparsity = 25, 0.75
    remaining = [remaining_fraction(index, rounds, sparsity) for index in range(rounds + 1)]
    assert remaining[0] == 1.0
    assert remaining[-1] == pytest.approx(1.0 - sparsity)
    inverse_steps = [1 / later - 1 / earlier for earlier, later in zip(remaining, remaining[1:], strict=False)]
    assert inverse_steps == pytest.approx([inverse_steps[0]] * rounds)  # 1/R grows linearly
    for index in range(1, rounds + 1):  # round i removes p / (i p + n (1 - p)) of the survivors
        removed = 1.0 - remaining[index] / remaining[index - 1]
        assert removed == pytest.approx(sparsity / (index * sparsity + rounds * (1 - sparsity)))
