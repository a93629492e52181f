"""Theoretical FLOPs of a pruned model (ShrinkBench's `metrics/flops.py` rule).

Multiply-accumulates of every Conv2d and Linear layer are counted on one input of the dataset's
shape; a pruned model's count is each layer's dense count times that layer's density (what a sparse
kernel could skip). BatchNorm, activations and pooling are left out, as in ShrinkBench.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.masks import PRUNABLE_MODULES, Masks


@torch.no_grad()
def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Dense multiply-accumulates per prunable layer (by weight name) for one input of `input_shape`."""
    counts: dict[str, int] = {}
    handles = []
    for module_name, module in model.named_modules():
        if isinstance(module, PRUNABLE_MODULES):
            def count(layer, inputs, output, name=f"{module_name}.weight"):
                per_output = layer.weight[0].numel()  # in_channels/groups * kernel area, or in_features
                counts[name] = int(output[0].numel() * per_output)

            handles.append(module.register_forward_hook(count))
    was_training = model.training
    model.eval()
    parameter = next(model.parameters())
    model(torch.zeros((1, *input_shape), device=parameter.device, dtype=parameter.dtype))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return counts


def pruned_macs(macs: dict[str, int], masks: Masks | None) -> float:
    """Dense MACs scaled by each layer's density (all layers dense when `masks` is None)."""
    if masks is None:
        return float(sum(macs.values()))
    return float(sum(count * masks[name].float().mean().item() for name, count in macs.items()))
