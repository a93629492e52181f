"""Pruners in your own training loop: masks for any `nn.Module`, without prunebench's jobs or models.

    from bench import api
    masks = api.prune(model, "snip", 0.9, [(images, labels)])   # {"layer.weight": 0/1 tensor}
    api.apply_masks(model, masks)                               # zero them and keep them zero
    # or: api.to_torch_prune(model, masks)                      # torch.nn.utils.prune reparametrization
    api.sparsity(model)                                         # 0.9: zero share of the prunable weights

`prune(model, method, sparsity, batches, **settings)` runs the methods that make a mask without
training: every registered method that is a `methods.base.Pruner` (snip, grasp, synflow, sanity-check,
magnitude) with the same code a job runs, and `random` (Synaptic-Flow's `Rand`: global exact-count
threshold of Gaussian scores) and `random-erk` (RigL's random baseline: per-layer exact counts of a
layer-wise density rule, `distribution` = erk (default) or uniform, at uniformly random positions,
`bench.layer_density`). `settings` are the method's settings (`grasp`: `temperature`,
`reinit_classifier`; `synflow`: `iterations`; `sanity-check`: `classifier_keep_ratio`). The prunable
set is found by module type (every `Conv2d` and `Linear` weight, `bench.masks`), so a torchvision
`resnet18` works as well as prunebench's own models; the mask keeps exactly round((1 - s) * N) weights.
The batches are labelled `(images, labels)` pairs scored as given (SNIP: their mean loss gradient;
GraSP: each batch is one of its Hessian-gradient passes, so pass the two class-sorted halves for the
official reading; SynFlow uses only the image shape; magnitude, random and sanity-check use none).
The model is left unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from bench.errors import BenchError, check_sparsity
from bench.layer_density import ERK, check_distribution, random_distribution_masks
from bench.masks import Masks, global_mask, prunable_parameters
from bench.masks import apply_masks as zero_pruned
from bench.settings_build import build_settings
from methods.registry import NoSettings, Pruner

RANDOM = "random"
RANDOM_ERK = "random-erk"


class GlobalRandom(Pruner):
    """Synaptic-Flow's `Rand` pruner: Gaussian scores, one global exact-count threshold."""

    Settings = NoSettings

    def __init__(self, settings: NoSettings):
        self.settings = settings

    def prune(self, model: nn.Module, batches: list, sparsity: float, seed: int,
              input_shape: tuple[int, ...] | None) -> Masks:
        generator = torch.Generator().manual_seed(seed)
        scores = {name: torch.randn(weight.shape, generator=generator).to(weight.device)
                  for name, weight in prunable_parameters(model).items()}
        return global_mask(scores, sparsity)


@dataclass(frozen=True)
class RandomLayerwiseSettings:
    distribution: str = ERK

    def __post_init__(self) -> None:
        check_distribution(self.distribution, RANDOM_ERK)


class RandomLayerwise(GlobalRandom):
    """RIGL's `random` mask init: a layer-wise density rule's exact counts at uniformly random positions."""

    Settings = RandomLayerwiseSettings

    def prune(self, model: nn.Module, batches: list, sparsity: float, seed: int,
              input_shape: tuple[int, ...] | None) -> Masks:
        return random_distribution_masks(model, self.settings.distribution, sparsity, seed)


def pruner_classes() -> dict[str, type]:
    """Every method `prune` accepts, by name."""
    from methods.registry import METHODS, load_plugins

    load_plugins()
    registered = {name: METHODS.get(name) for name in METHODS.names()}
    return ({name: cls for name, cls in registered.items() if issubclass(cls, Pruner)}
            | {RANDOM: GlobalRandom, RANDOM_ERK: RandomLayerwise})


def prune(model: nn.Module, method: str, sparsity: float, batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = (),
          seed: int = 0, **settings: object) -> Masks:
    """Masks `{parameter name: 0/1 tensor}` keeping exactly (1 - sparsity) of `model`'s prunable weights."""
    classes = pruner_classes()
    if method not in classes:
        raise BenchError(f"method {method!r} cannot prune without training; accepted: {', '.join(sorted(classes))}")
    sparsity = check_sparsity(sparsity)
    pruner_class = classes[method]
    pruner = pruner_class(build_settings(pruner_class.Settings, dict(settings), f"method {method}"))
    device = next(model.parameters()).device
    on_device = [(images.to(device), labels.to(device)) for images, labels in batches]
    if pruner_class.needs_batches and not on_device:
        raise BenchError(f"method {method!r} scores the weights on data, but no batches were given; accepted: "
                         "batches=[(images, labels), ...] (e.g. a few batches of the training set)")
    input_shape = tuple(on_device[0][0].shape[1:]) if on_device else None
    masks = pruner.prune(model, on_device, sparsity, seed, input_shape)
    return {name: mask.to(device=device, dtype=torch.float32) for name, mask in masks.items()}


@dataclass
class MaskHandles:
    """The gradient hooks `apply_masks` installed; `remove()` lets the pruned weights train again."""

    handles: list

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def apply_masks(model: nn.Module, masks: Masks) -> MaskHandles:
    """Zero the pruned weights of `model` and keep them zero in any optimizer loop: every masked
    weight's gradient is multiplied by its mask, so SGD (with momentum and weight decay), Adam or
    AdamW never move a weight that is zero with a zero gradient."""
    weights = prunable_parameters(model)
    unknown = sorted(set(masks) - set(weights))
    if unknown:
        raise BenchError(f"masks name {unknown[:3]} that are not prunable weights of the model; accepted: "
                         f"{', '.join(list(weights)[:3])}, ...")
    on_device = {name: mask.to(weights[name].device) for name, mask in masks.items()}
    zero_pruned(model, on_device)
    handles = [weights[name].register_hook(lambda grad, mask=mask: grad * mask) for name, mask in on_device.items()]
    return MaskHandles(handles)


def to_torch_prune(model: nn.Module, masks: Masks) -> nn.Module:
    """Hand the masks to `torch.nn.utils.prune.custom_from_mask` (weight = weight_orig * weight_mask)."""
    from torch.nn.utils import prune as torch_prune

    for name, mask in masks.items():
        module_name, _, parameter = name.rpartition(".")
        module = model.get_submodule(module_name)
        torch_prune.custom_from_mask(module, parameter, mask.to(getattr(module, parameter).device).bool())
    return model


def sparsity(model: nn.Module) -> float:
    """The fraction of `model`'s prunable weights that are exactly zero."""
    weights = prunable_parameters(model).values()
    return sum(int((weight == 0).sum()) for weight in weights) / sum(weight.numel() for weight in weights)
