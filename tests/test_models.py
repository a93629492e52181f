"""Architectures: parameter counts pinned against the reference implementations, names, inputs, init."""

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


@pytest.mark.parametrize("name", ["resnet21", "resnet2", "vgg17", "wrn15-2", "wrn16-0"])
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


def _vgg_count(plan: tuple, conv_bias: bool, classes: int = 10) -> tuple[int, int]:
    """(total, prunable) of a CIFAR VGG by formula: per conv 9 * c_in * c_out weights (+ c_out biases)
    and 2 * c_out BN parameters; the classifier 512 * classes + classes."""
    total = prunable = 0
    width = 3
    for item in plan:
        if item == "M":
            continue
        prunable += 9 * width * item
        total += 9 * width * item + (item if conv_bias else 0) + 2 * item
        width = item
    return total + 512 * classes + classes, prunable + 512 * classes


@pytest.mark.parametrize("depth, total", [(11, 9_231_114), (13, 9_416_010), (16, 14_728_266), (19, 20_040_522)])
def test_vgg_counts_match_open_lth_and_synaptic_flow(depth, total):
    """open_lth `cifar_vgg_{11,13,16,19}` = Synaptic-Flow `lottery_vgg.vgg*_bn` (convs with biases, BN,
    fc 512 -> 10); e.g. VGG-16: 14,710,464 conv weights + 4,224 conv biases + 8,448 BN + 5,130 fc =
    14,728,266, the count open_lth reports for cifar_vgg_16."""
    from bench.models import VGG_PLANS

    model = build_model(f"vgg{depth}", CIFAR10, seed=0)
    expected_total, expected_prunable = _vgg_count(VGG_PLANS[depth], conv_bias=True)
    assert count_parameters(model) == total == expected_total
    assert sum(weight.numel() for weight in prunable_parameters(model).values()) == expected_prunable


def test_grasp_vgg19_differs_only_by_conv_biases():
    """GraSP `models/base/vgg.py VGG(depth=19)`: bias-free convs, so 20,040,522 - 5,504 conv biases."""
    from bench.models import VGG_PLANS

    model = build_model("vgg19-grasp", CIFAR10, seed=0)
    assert count_parameters(model) == 20_035_018 == _vgg_count(VGG_PLANS[19], conv_bias=False)[0]
    assert all(module.bias is None for module in model.modules() if isinstance(module, torch.nn.Conv2d))


def _wrn_count(depth: int, widen: int, classes: int = 10) -> int:
    """WRN-d-k of szagoruyko/wide-residual-networks `pytorch/resnet.py` by formula: stem 3*16*9; per
    block bn0 2*c_in + conv0 9*c_in*c_out + bn1 2*c_out + conv1 9*c_out^2 (+ convdim c_in*c_out when
    c_in != c_out); final BN 2*64k; fc 64k*classes + classes."""
    blocks = (depth - 4) // 6
    total, width = 3 * 16 * 9, 16
    for base in (16, 32, 64):
        out = base * widen
        for _ in range(blocks):
            total += 2 * width + 9 * width * out + 2 * out + 9 * out * out + (width * out if width != out else 0)
            width = out
    return total + 2 * width + width * classes + classes


@pytest.mark.parametrize("name, depth, widen, total", [("wrn16-8", 16, 8, 10_961_370), ("wrn28-10", 28, 10, 36_479_194),
                                                       ("wrn10-1", 10, 1, 77_850)])
def test_wide_resnet_counts_match_the_official_code(name, depth, widen, total):
    """WRN-28-10: 36.5M and WRN-16-8: 11.0M parameters (Zagoruyko & Komodakis 2016, Table; exact by formula)."""
    model = build_model(name, CIFAR10, seed=0)
    assert count_parameters(model) == total == _wrn_count(depth, widen)


def _resnet18_count(classes: int) -> int:
    """ResNet-18 (CIFAR form, Synaptic-Flow `tinyimagenet_resnet.resnet18`) by formula: stem 3*64*9 + BN
    128; per basic block two 3x3 convs + two BNs, a 1x1 conv + BN shortcut where the shape changes;
    fc 512*classes + classes. 10 classes: 11,173,962 (the well-known CIFAR ResNet-18 count)."""
    total, width = 3 * 64 * 9 + 2 * 64, 64
    for stage, out in enumerate((64, 128, 256, 512)):
        for index in range(2):
            total += 9 * width * out + 2 * out + 9 * out * out + 2 * out
            if stage > 0 and index == 0:
                total += width * out + 2 * out
            width = out
    return total + 512 * classes + classes


def test_resnet18_cifar_and_tiny_imagenet_forms():
    cifar = build_model("resnet18", CIFAR10, seed=0)
    assert count_parameters(cifar) == 11_173_962 == _resnet18_count(10)
    assert not any(isinstance(module, torch.nn.MaxPool2d) for module in cifar.modules())
    assert cifar.conv.kernel_size == (3, 3) and cifar.conv.stride == (1, 1)
    tiny = build_model("resnet18", ModelInput(in_channels=3, num_classes=200, image_size=64), seed=0)
    assert count_parameters(tiny) == 11_271_432 == _resnet18_count(200)
    assert tiny(torch.zeros(2, 3, 64, 64)).shape == (2, 200)


@pytest.mark.parametrize("name", ["vgg11", "vgg19-grasp", "wrn10-2", "resnet18"])
def test_new_archs_take_small_and_large_images_and_every_conv_and_linear_is_prunable(name):
    model = build_model(name, ModelInput(1, 10, 8), seed=0)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    layers = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(prunable_parameters(model)) == len(layers)
