"""The sanity ablations of Frankle et al. (ICLR 2021, "Pruning Neural Networks at Initialization: Why
Are We Missing the Mark?", section 5), as a setting of a job (`JobSpec.ablation`).

- `none`: the method's mask and weights as they are (the default; it never enters a job's id).
- `shuffle`: each layer keeps its number of weights, at positions drawn uniformly at random (a seeded
  permutation of the layer's mask: the layer-wise densities survive, the positions do not).
- `reinit`: the mask is kept and the weights it is trained with are re-drawn from the architecture's
  init with a seed of the trial that no other use shares.
- `invert`: every exact-count threshold of the job keeps the *lowest* scores instead of the highest
  (`bench.masks.keep_lowest`), at the same sparsity.

The job's context (`bench.job_context.JobContext`) applies them where every mask passes: `shuffle` and
`reinit` when a mask is handed to the training loop, `invert` around the method's whole run; a method
declares which ablations it takes (`Method.ablations`), and a job whose ablation changed nothing fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.registry import Registry

if TYPE_CHECKING:
    from bench.masks import Masks

NO_ABLATION = "none"
"""The default ablation: the method's mask and weights as they are (never in a job's id)."""


@dataclass(frozen=True)
class Ablation:
    """What an ablation changes: mask positions, the trained weights, or the ranking of scores."""

    name: str
    shuffles_positions: bool = False
    redraws_weights: bool = False
    keeps_lowest: bool = False

    @property
    def acts_on_masks(self) -> bool:
        return self.shuffles_positions or self.redraws_weights


ABLATIONS: Registry[Ablation] = Registry("ablation")
for _ablation in (Ablation(NO_ABLATION), Ablation("shuffle", shuffles_positions=True), Ablation("reinit", redraws_weights=True),
                  Ablation("invert", keeps_lowest=True)):
    ABLATIONS.register(_ablation.name)(_ablation)
ABLATION_NAMES = tuple(ABLATIONS.names())


def shuffle_masks(masks: Masks, seed: int) -> Masks:
    """Each layer's mask with its entries permuted at random (the same count kept, new positions)."""
    import torch  # here, not at the top: job specs name ablations without needing torch

    generator = torch.Generator().manual_seed(seed)
    shuffled = {}
    for name, mask in masks.items():
        order = torch.randperm(mask.numel(), generator=generator).to(mask.device)
        shuffled[name] = mask.reshape(-1)[order].reshape(mask.shape)
    return shuffled
