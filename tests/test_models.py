"""CIFAR ResNets: parameter counts pinned against open_lth/Synaptic-Flow, names, inputs, init."""

import pytest
import torch

from bench.errors import UnknownNameError
from bench.masks import prunable_parameters
from bench.models import ModelInput, build_model, count_parameters

CIFAR10 = ModelInput(in_channels=3, num_classes=10, image_size=32)


def test_resnet20_counts_match_open_lth():
    model = build_model("resnet20", CIFAR10, seed=0)
    assert count_parameters(model) == 272_474
    assert sum(weight.numel() for weight in prunable_parameters(model).values()) == 270_896


def test_resnet32_prunable_count_matches_synaptic_flow():
    model = build_model("resnet32", CIFAR10, seed=0)
    assert sum(weight.numel() for weight in prunable_parameters(model).values()) == 464_432


def test_prunable_set_includes_first_conv_shortcuts_and_classifier():
    names = list(prunable_parameters(build_model("resnet20", CIFAR10, seed=0)))
    assert names[0] == "conv.weight" and names[-1] == "fc.weight"
    assert sum("shortcut" in name for name in names) == 2
    assert len(names) == 1 + 18 + 2 + 1


@pytest.mark.parametrize("name", ["resnet8", "resnet14", "resnet56"])
def test_any_6n_plus_2_depth_builds(name):
    model = build_model(name, ModelInput(1, 10, 8), seed=0)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet21", "resnet2", "vgg16"])
def test_unknown_arch_lists_accepted(name):
    with pytest.raises(UnknownNameError, match="accepted: .*resnet"):
        build_model(name, CIFAR10, seed=0)


def test_same_seed_same_init_and_init_is_kaiming():
    first, second = (build_model("resnet20", CIFAR10, seed=7) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True))
    other = build_model("resnet20", CIFAR10, seed=8)
    assert not torch.equal(first.conv.weight, other.conv.weight)
    conv = first.blocks[4].conv1.weight  # 32 x 32 x 3 x 3, fan-in 288
    assert conv.std().item() == pytest.approx((2 / 288) ** 0.5, rel=0.1)
    assert torch.all(first.bn.weight == 1) and torch.all(first.bn.bias == 0)
