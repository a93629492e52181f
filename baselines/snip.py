"""`snip`: SNIP, connection sensitivity at initialisation (Lee et al., ICLR 2019).

Follows namhoonlee/snip-public (`snip/model.py get_sparse_mask`) as read through Synaptic-Flow's
`Pruners/pruners.py class SNIP` (ganguli-lab/Synaptic-Flow): the score of a weight is |g * theta| at the
init, g the gradient of the mean cross-entropy on one labelled, un-augmented batch of training images
(the recipe's batch size, 100), BatchNorm in eval mode (the official `is_train=False`); global
exact-count thresholding over the prunable weights. Deviations from the official TF code: the scored
weights are the ones trained (Synaptic-Flow's reading; the TF code trains a second, independently drawn
set of variables), biases are never scored or pruned (prunebench's prunable set), and the normalisation
by the sum of scores is left out (it does not change the ranking).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from baselines._scoring import Batch, PruneAtInit, bn_mode, loss_gradients, scoring_batches
from bench.job_context import JobContext
from bench.masks import Masks, global_mask, prunable_parameters
from methods.registry import register


def snip_scores(model: nn.Module, batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
    """|dL/dtheta * theta| for every prunable weight, with `model` in eval mode."""
    with bn_mode(model, train=False):
        gradients = loss_gradients(model, batches)
    return {name: (gradients[name] * weight).detach().abs() for name, weight in prunable_parameters(model).items()}


@register("snip")
class Snip(PruneAtInit):
    needs_batches = True

    def job_batches(self, context: JobContext) -> list[Batch]:
        batch_size = context.train_settings.batch_size
        return scoring_batches(context.data, batch_size, batch_size, context.seed("snip"), augment=False)

    def prune(self, model: nn.Module, batches: list[Batch], sparsity: float, seed: int,
              input_shape: tuple[int, ...] | None) -> Masks:
        return global_mask(snip_scores(model, batches), sparsity)
