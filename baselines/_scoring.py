"""Building blocks shared by the baselines that score weights: gradients, Hessian-gradient products,
scoring data, and the one "score at init, then train" path (SNIP, GraSP, SynFlow, sanity-check).

Gradients are taken with `torch.autograd.grad` on the prunable weights only, so scoring never touches
`.grad` of the model that is trained afterwards. Scoring runs in the BatchNorm mode a method asks for
(`bn_mode`) and restores the model's mode after it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from bench.data import DeviceData
from bench.job_context import JobContext
from bench.masks import Masks, prunable_parameters
from methods.base import Method, Pruner

Batch = tuple[torch.Tensor, torch.Tensor]
Gradients = dict[str, torch.Tensor]

SCORING_BATCH_SIZE = 256
"""Batch size for drawing scoring data from the training stream (Synaptic-Flow's prune loader)."""


@contextmanager
def bn_mode(model: nn.Module, train: bool) -> Iterator[nn.Module]:
    """Run the block with `model` in train (batch statistics) or eval (running statistics) mode."""
    was_training = model.training
    model.train(train)
    try:
        yield model
    finally:
        model.train(was_training)


def batch_loss(model: nn.Module, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of `model` on `batch` with the logits divided by `temperature`."""
    images, labels = batch
    return F.cross_entropy(model(images) / temperature, labels)


def loss_gradients(model: nn.Module, batches: Sequence[Batch], temperature: float = 1.0,
                   weighting: str = "sum") -> Gradients:
    """Gradient of the batches' losses w.r.t. the prunable weights.

    `weighting="sum"`: the sum of the per-batch mean losses (GraSP's first pass); `"size"`: their mean
    weighted by batch size (Flow&Prune's `cal_grad`; with one batch both are that batch's gradient).
    """
    weights = prunable_parameters(model)
    total = sum(int(labels.numel()) for _, labels in batches)
    sums = {name: torch.zeros_like(weight) for name, weight in weights.items()}
    for batch in batches:
        factor = 1.0 if weighting == "sum" else batch[1].numel() / total
        grads = torch.autograd.grad(batch_loss(model, batch, temperature), list(weights.values()))
        for name, grad in zip(weights, grads, strict=True):
            sums[name].add_(grad, alpha=factor)
    return sums


def hessian_gradient_product(model: nn.Module, batches: Sequence[Batch], temperature: float = 1.0
                             ) -> tuple[Gradients, Gradients]:
    """(g, Hg) over the prunable weights: g = sum_b grad L_b, Hg = sum_b H_b g (Pearlmutter products).

    GraSP's two passes: g is computed first and held fixed (no graph), then for each batch
    z = <g, grad L_b> is differentiated once more. Flow&Prune's `cal_hg` is this divided by the number
    of batches (a positive factor, so its ranking is the same).
    """
    weights = prunable_parameters(model)
    gradient = loss_gradients(model, batches, temperature)
    products = {name: torch.zeros_like(weight) for name, weight in weights.items()}
    for batch in batches:
        grads = torch.autograd.grad(batch_loss(model, batch, temperature), list(weights.values()), create_graph=True)
        inner = sum((grad * gradient[name]).sum() for name, grad in zip(weights, grads, strict=True))
        for name, product in zip(weights, torch.autograd.grad(inner, list(weights.values())), strict=True):
            products[name].add_(product)
    return gradient, products


def class_balanced_sample(data: DeviceData, per_class: int, seed: int) -> list[Batch]:
    """`per_class` training images of every class, one batch per class in class order.

    Drawn from the (augmented, where the dataset augments) training stream fixed by `seed` until every
    class is full, as GraSP's `GraSP_fetch_data`; a class with fewer images gives all it has.
    """
    num_classes = data.data.num_classes
    wanted = torch.bincount(data.train_labels, minlength=num_classes).clamp(max=per_class)
    images, labels = [], []
    for batch_images, batch_labels in data.train_batches(seed, SCORING_BATCH_SIZE):
        images.append(batch_images)
        labels.append(batch_labels)
        if bool((torch.bincount(torch.cat(labels), minlength=num_classes) >= wanted).all()):
            break
    all_images, all_labels = torch.cat(images), torch.cat(labels)
    batches = []
    for label in range(num_classes):
        chosen = torch.nonzero(all_labels == label).flatten()[: int(wanted[label])]
        if len(chosen):
            batches.append((all_images[chosen], all_labels[chosen]))
    return batches


def scoring_batches(data: DeviceData, count: int, batch_size: int, seed: int, augment: bool | None = None
                    ) -> list[Batch]:
    """`count` training images fixed by `seed`, cut into batches of `batch_size` (the last may be smaller)."""
    images, labels = data.fixed_train_sample(count, seed, augment=augment)
    return [(images[start : start + batch_size], labels[start : start + batch_size])
            for start in range(0, len(labels), batch_size)]


class PruneAtInit(Method, Pruner):
    """Score the trial's init theta_0, mask it, then train the masked net with the recipe.

    Subclasses give `prune` (the `Pruner` contract, also run by `bench.api.prune`) and, where they use
    data, `job_batches` (what they score in a job). The mask and its scoring time are kept as a
    snapshot, so a resumed job neither scores again nor loses the time it took.
    """

    MASKS_SNAPSHOT = "init_masks"

    def job_batches(self, context: JobContext) -> list[Batch]:
        """The labelled batches the method scores in a job, drawn with the trial's seed (none here)."""
        return []

    def job_seed(self, context: JobContext) -> int:
        """The seed `prune` gets in a job (the trial's seed for the method's name)."""
        return context.seed(self.name)

    def init_masks(self, context: JobContext, model: nn.Module) -> Masks:
        """The mask for `model` (the trial's init) at `context.sparsity`."""
        size = context.model_input.image_size
        return self.prune(model, self.job_batches(context), context.sparsity, self.job_seed(context),
                          (context.model_input.in_channels, size, size))

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        model = context.new_model()
        stored = context.load_snapshot(self.MASKS_SNAPSHOT)
        if stored is None:
            with context.timed_scoring():
                masks = self.init_masks(context, model)
            stored = {"masks": masks, "scoring_s": context.scoring_seconds}
            context.save_snapshot(self.MASKS_SNAPSHOT, stored)
        else:
            context.scoring_seconds += stored["scoring_s"]
        result = context.train(model, "train", masks=stored["masks"])
        return [context.record(model, result.masks, result.evaluation, result.epochs)]
