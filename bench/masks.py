"""Prunable weights, exact-count thresholding of scores, and sparsity bookkeeping.

Conventions (DESIGN.md, open_lth's `sparse_global`): the prunable set is every `Conv2d` and `Linear`
weight, first conv, 1x1 shortcuts and classifier included; biases and BatchNorm never. The set is
found by module type (`PRUNABLE_MODULES`), never by prunebench's model classes, so any `nn.Module`
(a torchvision `resnet18`, say) has one. Sparsity is the fraction of prunable weights that are zero.

A mask is a dict `{parameter name: float tensor of 0/1}` shaped like the weight (float so that applying
it is one fused multiply). Thresholding keeps *exactly* the requested number of weights: scores are
ranked with a stable sort, so ties are broken by position and the same scores always give the same mask
(Synaptic-Flow's `kthvalue` rule can keep more or fewer on ties).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

Masks = dict[str, torch.Tensor]
Scores = Mapping[str, torch.Tensor]

PRUNABLE_MODULES = (nn.Conv2d, nn.Linear)


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The prunable weights of `model`, by parameter name, in module order."""
    return {
        f"{module_name}.weight" if module_name else "weight": module.weight
        for module_name, module in model.named_modules()
        if isinstance(module, PRUNABLE_MODULES)
    }


def ones_masks(model: nn.Module) -> Masks:
    """A dense mask (every prunable weight kept)."""
    return {name: torch.ones_like(weight) for name, weight in prunable_parameters(model).items()}


def keep_count(total: int, sparsity: float) -> int:
    """How many of `total` weights a mask at `sparsity` keeps: round((1 - s) * total), exact."""
    return int(round((1.0 - sparsity) * total))


def _score_dtype(tensors: Mapping[str, torch.Tensor]) -> torch.dtype:
    """float64 if any tensor is (SynFlow's scores exceed float32's range on ResNet-32), else float32."""
    return torch.float64 if any(tensor.dtype == torch.float64 for tensor in tensors.values()) else torch.float32


def _flat(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    dtype = _score_dtype(tensors)
    return torch.cat([tensor.detach().reshape(-1).to(dtype) for tensor in tensors.values()])


def _unflat(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Masks:
    masks, start = {}, 0
    for name, tensor in like.items():
        masks[name] = flat[start : start + tensor.numel()].reshape(tensor.shape).to(tensor.dtype)
        start += tensor.numel()
    return masks


@dataclass
class _Ranking:
    """Which end of the scores thresholds keep, and how many thresholds ran under it."""

    lowest: bool = False
    thresholds: int = 0


_RANKING: ContextVar[_Ranking | None] = ContextVar("ranking", default=None)


@contextmanager
def keep_lowest(active: bool = True) -> Iterator[_Ranking]:
    """Inside the block every exact-count threshold keeps the lowest scores instead of the highest
    (the `invert` ablation of Frankle et al. 2021) when `active`; yields a counter of the thresholds."""
    ranking = _Ranking(lowest=active)
    token = _RANKING.set(ranking)
    try:
        yield ranking
    finally:
        _RANKING.reset(token)


def _keep_top(scores: torch.Tensor, count: int, allowed: torch.Tensor | None) -> torch.Tensor:
    """A 0/1 vector keeping the `count` highest scores among `allowed` positions (stable on ties); the
    lowest inside `keep_lowest()`."""
    ranking = _RANKING.get()
    if ranking is not None:
        ranking.thresholds += 1
    ranked = -scores if ranking is not None and ranking.lowest else scores.clone()
    if allowed is not None:
        ranked[allowed == 0] = -math.inf
    order = torch.argsort(ranked, descending=True, stable=True)
    keep = torch.zeros_like(scores)
    keep[order[:count]] = 1.0
    return keep


def global_mask(scores: Scores, sparsity: float, current: Masks | None = None) -> Masks:
    """Keep the globally highest scores so that exactly `sparsity` of all prunable weights are zero.

    With `current`, only weights it still keeps can survive (pruned weights stay pruned), and the
    sparsity is still counted over all prunable weights.
    """
    flat_scores = _flat(scores)
    if torch.isnan(flat_scores).any():
        raise ValueError("scores contain NaN; cannot threshold")
    allowed = _flat(current) if current is not None else None
    count = keep_count(flat_scores.numel(), sparsity)
    if allowed is not None:
        count = min(count, int(allowed.sum().item()))
    return _unflat(_keep_top(flat_scores, count, allowed), _like_weights(scores, current))


def layerwise_mask(scores: Scores, densities: Mapping[str, float], current: Masks | None = None) -> Masks:
    """Keep the highest scores inside each layer, round(density * size) of them per layer."""
    counts = {name: int(round(densities[name] * layer_scores.numel())) for name, layer_scores in scores.items()}
    return layerwise_count_mask(scores, counts, current)


def layerwise_count_mask(scores: Scores, counts: Mapping[str, int], current: Masks | None = None) -> Masks:
    """Keep exactly `counts[name]` of the highest scores inside each layer (stable on ties)."""
    like = _like_weights(scores, current)
    masks = {}
    for name, layer_scores in scores.items():
        flat = layer_scores.detach().reshape(-1).to(_score_dtype(scores))
        allowed = current[name].reshape(-1) if current is not None else None
        masks[name] = _keep_top(flat, counts[name], allowed).reshape(layer_scores.shape).to(like[name].dtype)
    return masks


def uniform_layerwise_mask(scores: Scores, sparsity: float, current: Masks | None = None) -> Masks:
    """Every layer pruned to the same sparsity (layer-wise scope)."""
    return layerwise_mask(scores, {name: 1.0 - sparsity for name in scores}, current)


def _like_weights(scores: Scores, current: Masks | None) -> Mapping[str, torch.Tensor]:
    if current is not None:
        return current
    return {name: torch.empty(tensor.shape, dtype=torch.float32, device=tensor.device) for name, tensor in scores.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the pruned weights of `model` in place."""
    weights = prunable_parameters(model)
    torch._foreach_mul_([weights[name] for name in masks], list(masks.values()))


def masks_to(masks: Masks, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Masks:
    return {name: mask.to(device=device, dtype=dtype) for name, mask in masks.items()}


def check_binary(masks: Masks) -> None:
    for name, mask in masks.items():
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask {name} is not binary")


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity of a masked model: over the prunable weights, and whole-model compression."""

    prunable: int
    kept: int
    total_parameters: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.prunable

    @property
    def density(self) -> float:
        return self.kept / self.prunable

    @property
    def compression(self) -> float:
        """Total parameters / nonzero parameters (ShrinkBench's whole-model compression ratio)."""
        nonzero = self.total_parameters - (self.prunable - self.kept)
        return self.total_parameters / nonzero

    def as_record(self) -> dict[str, float | int]:
        return {
            "achieved_sparsity": self.sparsity,
            "density": self.density,
            "compression": self.compression,
            "prunable_weights": self.prunable,
            "kept_weights": self.kept,
            "total_parameters": self.total_parameters,
        }


def sparsity_report(model: nn.Module, masks: Masks | None) -> SparsityReport:
    """Sparsity of `model` under `masks` (None: dense, every weight kept)."""
    prunable = sum(weight.numel() for weight in prunable_parameters(model).values())
    kept = prunable if masks is None else int(sum(mask.sum().item() for mask in masks.values()))
    total = sum(parameter.numel() for parameter in model.parameters())
    return SparsityReport(prunable=prunable, kept=kept, total_parameters=total)


def layer_table(masks: Masks) -> list[dict[str, object]]:
    """One row per prunable layer: name, shape, size, kept weights, sparsity."""
    rows = []
    for name, mask in masks.items():
        kept = int(mask.sum().item())
        rows.append(
            {
                "layer": name,
                "shape": "x".join(map(str, mask.shape)),
                "weights": mask.numel(),
                "kept": kept,
                "sparsity": 1.0 - kept / mask.numel(),
            }
        )
    return rows


def magnitude_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    """|w| for every prunable weight (the score of magnitude pruning, IMP and IMC's default mask)."""
    return {name: weight.detach().abs() for name, weight in prunable_parameters(model).items()}
