"""The architectures prunebench builds, each registered by name in `ARCHS`.

- `resnet{6n+2}`: CIFAR ResNets (He et al. 2016, section 4.2), as open_lth's `cifar_resnet` and
  Synaptic-Flow's `lottery_resnet` (below).
- `vgg11`, `vgg13`, `vgg16`, `vgg19`: the CIFAR VGG with BatchNorm of open_lth's `cifar_vgg` and
  Synaptic-Flow's `lottery_vgg` (`vgg*_bn`): 3x3 convs with biases, BN, ReLU, 2x2 max-pools, average
  pooling to 512 features and one linear classifier (no hidden fully connected layers).
  `vgg19-grasp`: GraSP's VGG-19 (alecwangcq/GraSP `models/base/vgg.py`), the same layers with
  bias-free convs (the one difference in the layers; GraSP's N(0, 0.01) classifier init and fan-out
  Kaiming init are not taken: every architecture uses the init below).
- `wrn{d}-{k}` (`wrn16-8`, `wrn28-10`, any d = 6n+4): Wide ResNets (Zagoruyko & Komodakis 2016,
  szagoruyko/wide-residual-networks `pytorch/resnet.py`): a 3x3 stem of 16 channels, three groups of
  n pre-activation blocks (BN-ReLU-conv, twice) of 16k/32k/64k channels, a 1x1 shortcut conv (no BN)
  on the pre-activated input where the width changes, BN-ReLU, average pooling, a linear classifier;
  bias-free convs, no dropout (the official default).
- `resnet18`: ResNet-18 in its CIFAR form (a 3x3 stride-1 stem of 64 channels and no max-pool, then
  2+2+2+2 basic blocks of 64/128/256/512 channels with 1x1 conv + BN shortcuts), the form of
  Synaptic-Flow's `tinyimagenet_resnet.resnet18`; on 64x64 Tiny-ImageNet images (`image_size = 64`,
  200 classes) it is that model exactly (the feature map is 8x8 before the pooling).

The pooling before every classifier is adaptive (to 1x1), which equals open_lth's and Synaptic-Flow's
`AvgPool2d(2)` on 32x32 inputs and GraSP's `AvgPool2d(4)` on 64x64 ones, and lets smaller test images
through (VGG's max-pools round up, `ceil_mode`, which changes nothing on even sizes and lets 8x8
digits through its four pools). The CIFAR ResNets have three stages of 16/32/64 channels with
n = (depth - 2) / 6 basic blocks each; the shortcut is a 1x1 stride-2 convolution + BatchNorm wherever
the shape changes (open_lth's and Synaptic-Flow's "option B"), global average pooling and a linear
classifier. Every architecture: Kaiming-normal (fan-in) init for conv and linear weights, BatchNorm
gamma = 1 and beta = 0, zero biases.

A model is built for the dataset: `in_channels`, `num_classes` and `image_size` come from it (the
networks are fully convolutional up to the pooling, so 8x8 digits, 32x32 CIFAR and 64x64 Tiny-ImageNet
use the same definitions). Parameter counts are pinned in `tests/test_models.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from bench.plugins import ARCHS_GROUP
from bench.registry import Registry

STAGE_WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class ModelInput:
    """What a model needs to know about its data."""

    in_channels: int
    num_classes: int
    image_size: int


ARCHS: Registry[Callable[[ModelInput], nn.Module]] = Registry("arch", ARCHS_GROUP)


class BasicBlock(nn.Module):
    def __init__(self, in_width: int, out_width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_width, out_width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_width)
        self.conv2 = nn.Conv2d(out_width, out_width, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_width)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_width != out_width:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_width, out_width, 1, stride=stride, bias=False), nn.BatchNorm2d(out_width)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class BasicBlockResNet(nn.Module):
    """A 3x3 stride-1 stem (conv, BN, ReLU), stages of basic blocks of `widths` channels (the first block
    of every stage but the first strides 2), global average pooling and a linear classifier."""

    def __init__(self, widths: tuple[int, ...], blocks_per_stage: int, model_input: ModelInput):
        super().__init__()
        self.conv = nn.Conv2d(model_input.in_channels, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        blocks: list[nn.Module] = []
        in_width = widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(in_width, width, 2 if stage > 0 and index == 0 else 1))
                in_width = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_width, model_input.num_classes)
        reset_parameters(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class CifarResNet(BasicBlockResNet):
    """ResNet-(6n+2) for small images."""

    def __init__(self, depth: int, model_input: ModelInput):
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        super().__init__(STAGE_WIDTHS, (depth - 2) // 6, model_input)
        self.depth = depth


def reset_parameters(model: nn.Module) -> None:
    """The design's init: Kaiming-normal conv/linear weights, zero biases, BN gamma=1 and beta=0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _resolve_resnet(name: str) -> Callable[[ModelInput], nn.Module] | None:
    match = re.fullmatch(r"resnet(\d+)", name)
    if match is None:
        return None
    depth = int(match.group(1))
    if depth < 8 or (depth - 2) % 6:
        return None
    return lambda model_input: CifarResNet(depth, model_input)


ARCHS.register_pattern("resnet{6n+2} (resnet8, resnet14, resnet20, resnet32, ...)", _resolve_resnet)

VGG_PLANS = {  # channels of each 3x3 conv, "M" = 2x2 max-pool (open_lth `cifar_vgg`, GraSP `defaultcfg`)
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class CifarVGG(nn.Module):
    """VGG with BatchNorm for small images: conv-BN-ReLU modules and max-pools, pooled to one linear layer."""

    def __init__(self, plan: tuple[int | str, ...], model_input: ModelInput, conv_bias: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        width = model_input.in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(width, int(item), 3, padding=1, bias=conv_bias), nn.BatchNorm2d(int(item)),
                           nn.ReLU(inplace=True)]
                width = int(item)
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(width, model_input.num_classes)
        reset_parameters(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1))


for _depth, _plan in VGG_PLANS.items():
    ARCHS.register(f"vgg{_depth}")(lambda model_input, plan=_plan: CifarVGG(plan, model_input))
ARCHS.register("vgg19-grasp")(lambda model_input: CifarVGG(VGG_PLANS[19], model_input, conv_bias=False))


class PreActBlock(nn.Module):
    """A Wide ResNet block: BN-ReLU-conv3x3 twice; a 1x1 conv of the pre-activated input where widths differ."""

    def __init__(self, in_width: int, out_width: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_width)
        self.conv1 = nn.Conv2d(in_width, out_width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_width)
        self.conv2 = nn.Conv2d(out_width, out_width, 3, stride=1, padding=1, bias=False)
        self.shortcut = nn.Conv2d(in_width, out_width, 1, stride=stride, bias=False) if in_width != out_width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-d-k: (d - 4) / 6 pre-activation blocks per group, groups of 16k, 32k and 64k channels."""

    def __init__(self, depth: int, widen: int, model_input: ModelInput):
        super().__init__()
        blocks_per_group = (depth - 4) // 6
        self.conv = nn.Conv2d(model_input.in_channels, STAGE_WIDTHS[0], 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        in_width = STAGE_WIDTHS[0]
        for group, base in enumerate(STAGE_WIDTHS):
            for index in range(blocks_per_group):
                blocks.append(PreActBlock(in_width, base * widen, 2 if group > 0 and index == 0 else 1))
                in_width = base * widen
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_width)
        self.fc = nn.Linear(in_width, model_input.num_classes)
        reset_parameters(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _resolve_wide_resnet(name: str) -> Callable[[ModelInput], nn.Module] | None:
    match = re.fullmatch(r"wrn(\d+)-(\d+)", name)
    if match is None:
        return None
    depth, widen = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 or widen < 1:
        return None
    return lambda model_input: WideResNet(depth, widen, model_input)


ARCHS.register_pattern("wrn{6n+4}-{k} (wrn16-8, wrn28-10, ...)", _resolve_wide_resnet)

RESNET18_WIDTHS = (64, 128, 256, 512)


class ResNet18(BasicBlockResNet):
    """ResNet-18, CIFAR form: 3x3 stride-1 stem, no max-pool, 2 basic blocks per stage of 64..512 channels."""

    def __init__(self, model_input: ModelInput, blocks_per_stage: int = 2):
        super().__init__(RESNET18_WIDTHS, blocks_per_stage, model_input)


ARCHS.register("resnet18")(ResNet18)


def build_model(arch: str, model_input: ModelInput, seed: int) -> nn.Module:
    """Build `arch` for `model_input` with its weights drawn from `seed` (the global RNG is untouched)."""
    constructor = ARCHS.get(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return constructor(model_input)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
