"""`synflow`: Iterative Synaptic Flow Pruning at initialisation (Tanaka et al., NeurIPS 2020).

Follows ganguli-lab/Synaptic-Flow (`Pruners/pruners.py class SynFlow`, `prune.py prune_loop`): on a copy
of the init whose every parameter and buffer is replaced by its absolute value (`linearize`), BatchNorm
in eval mode, R = sum of the outputs for an all-ones input; the score is |dR/dtheta * theta|. Scoring
and masking repeat `iterations` (100) times with the exponential schedule d_k = d^(k/n), each step on
the currently masked net, pruned weights staying pruned; global exact-count thresholding.

Deviation: the copy and its input are float64 (the official code scores in float32, which overflows to
inf on ResNet-32 and prunes every weight on the 2x-wide one; see the spec's precision check).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from baselines._scoring import Batch, PruneAtInit, bn_mode
from bench.errors import BenchError
from bench.masks import Masks, apply_masks, global_mask, masks_to, ones_masks, prunable_parameters
from methods.registry import register


@dataclass(frozen=True)
class SynflowSettings:
    iterations: int = field(default=100, metadata={"help": "scoring/masking steps of the exponential schedule",
                                                   "minimum": 1})


def linearized_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of `model` with |value| for every parameter and buffer (SynFlow's `linearize`)."""
    positive = copy.deepcopy(model).double()
    with torch.no_grad():
        for tensor in positive.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    return positive


def synflow_scores(positive_model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """|dR/dtheta * theta| on an already linearized model, R = sum of its outputs on an all-ones input."""
    weights = prunable_parameters(positive_model)
    first = next(iter(weights.values()))
    ones = torch.ones((1, *input_shape), dtype=first.dtype, device=first.device)
    with bn_mode(positive_model, train=False):
        flow = positive_model(ones).sum()
        grads = torch.autograd.grad(flow, list(weights.values()))
    return {name: (grad * weight).detach().abs() for (name, weight), grad in zip(weights.items(), grads, strict=True)}


def synflow_mask(model: nn.Module, input_shape: tuple[int, ...], sparsity: float, iterations: int) -> Masks:
    """The SynFlow mask of `model` at `sparsity` after `iterations` exponential-schedule steps."""
    positive = linearized_copy(model)
    density = 1.0 - sparsity
    masks = ones_masks(model)
    for step in range(1, iterations + 1):
        apply_masks(positive, masks_to(masks, first_device(positive), torch.float64))
        scores = synflow_scores(positive, input_shape)
        masks = global_mask(scores, 1.0 - density ** (step / iterations), current=masks)
    return masks


def first_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@register("synflow")
class Synflow(PruneAtInit):
    Settings = SynflowSettings
    quick_hparams = {"iterations": 5}

    def prune(self, model: nn.Module, batches: list[Batch], sparsity: float, seed: int,
              input_shape: tuple[int, ...] | None) -> Masks:
        if input_shape is None:
            raise BenchError("synflow needs the input shape (C, H, W); accepted: one batch of images or input_shape")
        return synflow_mask(model, input_shape, sparsity, self.settings.iterations)
