"""`sanity-check`: random tickets with "smart ratio" layer-wise keep ratios (Su et al., NeurIPS 2020,
"Sanity-checking pruning methods: random tickets can win the jackpot").

Follows JingtongSu/sanity-checking-pruning (`pruner/SmartRatio.py SmartRatio`, `--smart_ratio 1`): the
prunable layers l = 1..L in module order (first conv, block convs, each 1x1 shortcut after its block's
second conv, classifier last) get raw ratios r_l = (L-l+1)^2 + (L-l+1) (the ResNet rule), divided by
l^2 for architectures without residual connections (the official rule for every `--arch` but
`resnet`, i.e. VGG; `layer_ratios`); the
classifier keeps a fixed `classifier_keep_ratio` (0.3); conv layers keep p_l = c * r_l with c chosen so
that the total matches the requested density, and any p_l >= 1 is set to 1 with its overflow carried
to the following layers. Each layer keeps its count of weights at uniformly random positions, drawn
from the trial's seed. No data is used.

Deviations: per-layer counts are int(p_l * N_l) as in the official code, and the few weights that
truncation loses are handed out by largest remainder so that the total is *exactly* the requested
count; the official net is 2x wide (32-64-128), ours is prunebench's 16-32-64 ResNet. Note that the
classifier's fixed 0.3 prunes it harder than the network at low sparsities (their rule, kept); only
where a sparsity is so low that the conv layers cannot hold the rest (below about 0.2% for ResNet-20
on 10 classes, e.g. IMC's s* on digits) does the classifier keep more than 0.3, just enough to fit.

`distribution = "erk"` (or "uniform") replaces the smart ratios by a layer-wise density rule of
`bench.layer_density`: the random baseline of the sparse-training papers (RIGL's `random` mask init with
Erdos-Renyi-Kernel counts, google-research/rigl `rigl/sparse_utils.py`); the smart-ratio settings must
then keep their defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from baselines._scoring import Batch, PruneAtInit
from bench.errors import BenchError
from bench.layer_density import DISTRIBUTIONS, kept_counts, model_sparsities, random_masks
from bench.masks import Masks, keep_count, prunable_parameters
from methods.registry import register

LAYER_RATIOS: dict[str, Callable[[int, int], float]] = {
    "resnet": lambda layers_left, position: layers_left**2 + layers_left,
    "plain": lambda layers_left, position: (layers_left**2 + layers_left) / position**2,
}
"""Raw keep ratio of the layer at 1-based `position` with `layers_left` = L - position + 1 layers from it to
the end: the official ResNet rule, and its rule for the other architectures (VGG)."""
AUTO = "auto"
SMART_RATIO = "smart-ratio"


@dataclass(frozen=True)
class SanityCheckSettings:
    classifier_keep_ratio: float = field(
        default=0.3, metadata={"help": "fixed keep ratio of the Linear classifier (official linear_keep_ratio)"})
    layer_ratios: str = field(default=AUTO, metadata={
        "help": "raw layer ratios: resnet, plain (divided by l^2, the official rule for VGG) or auto (resnet "
                "for models with residual blocks, plain otherwise)"})
    distribution: str = field(default=SMART_RATIO, metadata={
        "help": f"per-layer counts: {SMART_RATIO} (the paper's rule), or a layer-wise density rule: "
                f"{', '.join(DISTRIBUTIONS)} (erk: RigL's Erdos-Renyi-Kernel random baseline)"})

    def __post_init__(self) -> None:
        accepted = (AUTO, *LAYER_RATIOS)
        if self.layer_ratios not in accepted:
            raise BenchError(f"sanity-check setting layer_ratios = {self.layer_ratios!r}; accepted: {', '.join(accepted)}")
        if self.distribution not in (SMART_RATIO, *DISTRIBUTIONS):
            raise BenchError(f"sanity-check setting distribution = {self.distribution!r}; accepted: "
                             f"{', '.join((SMART_RATIO, *DISTRIBUTIONS))}")
        if self.distribution != SMART_RATIO and (self.layer_ratios != AUTO or self.classifier_keep_ratio != 0.3):
            raise BenchError(f"sanity-check distribution {self.distribution} takes no classifier_keep_ratio or "
                             f"layer_ratios; accepted: those at their defaults, or distribution = {SMART_RATIO}")


def has_residual_blocks(model: nn.Module) -> bool:
    """Whether `model` has residual blocks: a submodule with a `shortcut` (prunebench's ResNets, WRNs,
    ResNet-18) or a `downsample` (torchvision's ResNets) attribute."""
    return any(hasattr(module, "shortcut") or hasattr(module, "downsample") for module in model.modules())


def smart_ratio_counts(sizes: dict[str, int], classifier: str, sparsity: float, classifier_keep_ratio: float,
                       layer_ratios: str = "resnet") -> dict[str, int]:
    """Weights kept per layer (module order, `classifier` excluded from the ratio rule); sums exactly."""
    target = keep_count(sum(sizes.values()), sparsity)
    convs = [name for name in sizes if name != classifier]
    conv_capacity = sum(sizes[name] for name in convs)
    # the fixed classifier ratio, raised only as far as a very low sparsity needs (every conv then dense)
    classifier_kept = max(int(classifier_keep_ratio * sizes[classifier]), target - conv_capacity)
    layer_count = len(sizes)
    rule = LAYER_RATIOS[layer_ratios]
    raw = {name: rule(layer_count - index, index + 1) for index, name in enumerate(convs)}
    conv_target = target - classifier_kept
    if not 0 <= conv_target <= conv_capacity or classifier_kept > sizes[classifier]:
        raise BenchError(f"sparsity {sparsity} cannot be met with the classifier kept at {classifier_keep_ratio}; "
                         f"accepted: sparsities whose kept count fits the conv layers")
    scale = conv_target / sum(int(sizes[name] * raw[name]) for name in convs)
    ratios = {name: scale * raw[name] for name in convs}
    carry = 0.0
    for name in convs:  # the official overflow walk: fill later layers up to 1
        if ratios[name] >= 1.0:
            carry += (ratios[name] - 1.0) * sizes[name]
            ratios[name] = 1.0
        elif carry > 0:
            filled = min(1.0, ratios[name] + carry / sizes[name])
            carry -= (filled - ratios[name]) * sizes[name]
            ratios[name] = filled
    counts = {name: int(ratios[name] * sizes[name]) for name in convs}
    largest_remainder_first = sorted(convs, key=lambda name: counts[name] - ratios[name] * sizes[name])
    for name in largest_remainder_first[: conv_target - sum(counts.values())]:
        counts[name] += 1
    return {**counts, classifier: classifier_kept}


def classifier_name(model: nn.Module) -> str:
    """The prunable Linear layer that comes last (the classifier)."""
    linears = [name for name, weight in prunable_parameters(model).items() if weight.dim() == 2]
    if not linears:
        raise BenchError("sanity-check needs a Linear classifier; accepted: models ending in nn.Linear")
    return linears[-1]


@register("sanity-check")
class SanityCheck(PruneAtInit):
    Settings = SanityCheckSettings

    def prune(self, model: nn.Module, batches: list[Batch], sparsity: float, seed: int,
              input_shape: tuple[int, ...] | None) -> Masks:
        weights = prunable_parameters(model)
        sizes = {name: weight.numel() for name, weight in weights.items()}
        if self.settings.distribution != SMART_RATIO:
            return random_masks(weights, kept_counts(model_sparsities(model, self.settings.distribution, sparsity),
                                                     sizes), seed)
        rule = self.settings.layer_ratios
        if rule == AUTO:
            rule = "resnet" if has_residual_blocks(model) else "plain"
        counts = smart_ratio_counts(sizes, classifier_name(model), sparsity, self.settings.classifier_keep_ratio, rule)
        return random_masks(weights, counts, seed)

