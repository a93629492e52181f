"""Layer-wise density rules: how one requested sparsity is spread over the prunable layers.

`uniform`: every masked layer at the requested sparsity s. `erk` (Erdos-Renyi-Kernel, RigL's default,
Evci et al. 2020): a layer's density is proportional to (sum of its dimensions) / (product of its
dimensions), balanced so that the masked layers together keep the uniform count, with layers that would
exceed density 1 made dense and the rest rebalanced. Both follow google-research/rigl
`rigl/sparse_utils.py`: `get_sparsities_erdos_renyi` (the redistribution loop: every layer whose raw
score equals the current maximum joins the dense set in one pass, `erk_power_scale` as `power_scale`),
`get_n_zeros` (a layer keeps n - floor(s_l n) weights, so the total may exceed the uniform count by up
to one weight per layer) and `get_mask_random_numpy` (random masks: the exact count at uniformly random
positions). Layers left out of the allocation (`unmasked`: RIGL's CIFAR script keeps the first conv
unmasked, `prune_first_layer=False`) are dense and take no part in the balance, as in RIGL.

Used by the sparse-training methods (`gmp`, `set`, `rigl`), by `sanity-check`'s `distribution` setting
and by `bench.api`'s `random-erk`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn

from bench.errors import BenchError
from bench.masks import Masks, layerwise_count_mask, prunable_parameters

UNIFORM = "uniform"
ERK = "erk"
DISTRIBUTIONS = (UNIFORM, ERK)


def check_distribution(name: str, owner: str) -> None:
    """A one-line error unless `name` is a layer-wise density rule."""
    if name not in DISTRIBUTIONS:
        raise BenchError(f"{owner} distribution = {name!r}; accepted: {', '.join(DISTRIBUTIONS)}")


def zeros_count(size: int, sparsity: float) -> int:
    """Pruned weights of a layer of `size` at `sparsity`: floor(s n) (RIGL `get_n_zeros`)."""
    return int(math.floor(sparsity * size))


def erk_sparsities(shapes: Mapping[str, Sequence[int]], sparsity: float, power_scale: float = 1.0
                   ) -> dict[str, float]:
    """Per-layer sparsities of ERK at overall `sparsity` over the layers `shapes` (RIGL's loop)."""
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: (sum(shape) / sizes[name]) ** power_scale for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        rhs, divisor = 0.0, 0.0
        for name, size in sizes.items():
            zeros = zeros_count(size, sparsity)
            if name in dense:
                rhs -= zeros
            else:
                rhs += size - zeros
                divisor += raw[name] * size
        if divisor == 0:  # every layer dense (a sparsity too low to mask anything)
            break
        epsilon = rhs / divisor
        largest = max(raw[name] for name in sizes if name not in dense)
        if largest * epsilon <= 1:
            break
        dense |= {name for name in sizes if name not in dense and raw[name] == largest}
    return {name: 0.0 if name in dense else 1.0 - epsilon * raw[name] for name in sizes}


def layer_sparsities(distribution: str, shapes: Mapping[str, Sequence[int]], sparsity: float,
                     unmasked: Collection[str] = ()) -> dict[str, float]:
    """Per-layer sparsities under `distribution`; layers in `unmasked` are dense and outside the balance."""
    check_distribution(distribution, "layer-wise")
    masked = {name: shape for name, shape in shapes.items() if name not in unmasked}
    chosen = erk_sparsities(masked, sparsity) if distribution == ERK else dict.fromkeys(masked, sparsity)
    return {name: chosen.get(name, 0.0) for name in shapes}


def kept_counts(sparsities: Mapping[str, float], sizes: Mapping[str, int]) -> dict[str, int]:
    """Weights kept per layer: n - floor(s_l n)."""
    return {name: sizes[name] - zeros_count(sizes[name], sparsities[name]) for name in sparsities}


def model_sparsities(model: nn.Module, distribution: str, sparsity: float, dense_first_layer: bool = False
                     ) -> dict[str, float]:
    """Per-layer sparsities of `model`'s prunable weights (module order; the first one dense on request)."""
    weights = prunable_parameters(model)
    unmasked = list(weights)[:1] if dense_first_layer else []
    return layer_sparsities(distribution, {name: tuple(weight.shape) for name, weight in weights.items()}, sparsity,
                            unmasked)


def random_masks(weights: Mapping[str, torch.Tensor], counts: Mapping[str, int], seed: int) -> Masks:
    """Exactly `counts[name]` kept weights per layer at uniformly random positions drawn with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    scores = {name: torch.rand(weight.shape, generator=generator).to(weight.device) for name, weight in weights.items()}
    return layerwise_count_mask(scores, counts)


def random_distribution_masks(model: nn.Module, distribution: str, sparsity: float, seed: int,
                              dense_first_layer: bool = False) -> Masks:
    """A random mask of `model` with the per-layer counts of `distribution` (RIGL's `random` mask init)."""
    weights = prunable_parameters(model)
    sparsities = model_sparsities(model, distribution, sparsity, dense_first_layer)
    return random_masks(weights, kept_counts(sparsities, {name: weight.numel() for name, weight in weights.items()}),
                        seed)
