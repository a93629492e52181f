"""CIFAR ResNets (He et al. 2016, section 4.2), as in open_lth's `cifar_resnet` and Synaptic-Flow.

Three stages of 16/32/64 channels with n = (depth - 2) / 6 basic blocks each; the shortcut is a 1x1
stride-2 convolution + BatchNorm wherever the shape changes (open_lth's and Synaptic-Flow's "option B"),
global average pooling and a linear classifier. Kaiming-normal (fan-in) init for conv and linear
weights, BatchNorm gamma = 1 and beta = 0, zero biases.

Any `resnet{6n+2}` name builds (resnet8, resnet20, resnet32, resnet56, ...). A model is built for the
dataset: `in_channels`, `num_classes` and `image_size` come from it (the network is fully
convolutional up to the pooling, so 8x8 digits and 32x32 CIFAR use the same definition).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from bench.registry import Registry

STAGE_WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class ModelInput:
    """What a model needs to know about its data."""

    in_channels: int
    num_classes: int
    image_size: int


ARCHS: Registry[Callable[[ModelInput], nn.Module]] = Registry("arch")


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


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images."""

    def __init__(self, depth: int, model_input: ModelInput):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.depth = depth
        self.conv = nn.Conv2d(model_input.in_channels, STAGE_WIDTHS[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(STAGE_WIDTHS[0])
        blocks: list[nn.Module] = []
        in_width = STAGE_WIDTHS[0]
        for stage, width in enumerate(STAGE_WIDTHS):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_width, width, stride))
                in_width = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_width, model_input.num_classes)
        reset_parameters(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


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


def build_model(arch: str, model_input: ModelInput, seed: int) -> nn.Module:
    """Build `arch` for `model_input` with its weights drawn from `seed` (the global RNG is untouched)."""
    constructor = ARCHS.get(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return constructor(model_input)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
