"""`grasp`: GraSP, gradient signal preservation at initialisation (Wang et al., ICLR 2020).

Follows alecwangcq/GraSP (`pruner/GraSP.py GraSP`, `GraSP_fetch_data`): on a deep copy of the init in
*train* mode whose `Linear` weights are re-drawn with `xavier_normal` (the official `reinit=True`; the
trained net keeps its own classifier init), with 10 training images per class (5 for more than 10
classes) drawn from the augmented training stream, sorted by class and split into two halves
(`iterations` such draws: 1 for <= 10 classes, 2 otherwise, as the CIFAR-10/100 configs), temperature
T = 200: g = sum_h grad L_h, Hg = sum_h H_h g, score S = -theta * Hg, and the weights with the
*highest* S are removed (no abs). Global exact-count thresholding (the official code keeps ties at the
threshold). Deviation: the official ResNet-32 is 2x wide (32-64-128) with a N(0, 0.01) classifier;
prunebench uses its one 16-32-64 ResNet with Kaiming init.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from baselines._scoring import Batch, PruneAtInit, bn_mode, class_balanced_sample, hessian_gradient_product
from bench.job_context import JobContext
from bench.masks import Masks, global_mask, prunable_parameters
from methods.registry import register

FEW_CLASSES = 10
"""Up to this many classes GraSP's configs take 10 images per class and one draw (CIFAR-10)."""


@dataclass(frozen=True)
class GraspSettings:
    temperature: float = field(default=200.0, metadata={"help": "logits are divided by T while scoring (official 200)"})
    samples_per_class: int = field(
        default=0, metadata={"help": "images per class per draw; 0 = official: 10 for <= 10 classes, else 5"})
    iterations: int = field(
        default=0, metadata={"help": "class-balanced draws (each split in halves); 0 = official: 1 for <= 10 "
                                     "classes, else 2"})
    reinit_classifier: bool = field(
        default=True, metadata={"help": "re-draw the Linear weights of the scoring copy with xavier_normal (official)"})


def grasp_scores(model: nn.Module, batches: Sequence[Batch], temperature: float) -> dict[str, torch.Tensor]:
    """GraSP's score -theta * Hg for every prunable weight (the highest are removed)."""
    _, hessian_gradient = hessian_gradient_product(model, batches, temperature)
    return {name: -(weight * hessian_gradient[name]).detach() for name, weight in prunable_parameters(model).items()}


def grasp_mask(scores: dict[str, torch.Tensor], sparsity: float) -> Masks:
    """Remove the weights with the highest GraSP score (keep the lowest)."""
    return global_mask({name: -score for name, score in scores.items()}, sparsity)


def halves(batches: Sequence[Batch]) -> list[Batch]:
    """Concatenate class-sorted batches and split them into two halves, as the official code."""
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    middle = len(labels) // 2
    return [(images[:middle], labels[:middle]), (images[middle:], labels[middle:])]


@register("grasp")
class Grasp(PruneAtInit):
    Settings = GraspSettings
    needs_batches = True

    def job_batches(self, context: JobContext) -> list[Batch]:
        settings = self.settings
        few_classes = context.data.data.num_classes <= FEW_CLASSES
        per_class = settings.samples_per_class or (10 if few_classes else 5)
        iterations = settings.iterations or (1 if few_classes else 2)
        return [half for draw in range(iterations)
                for half in halves(class_balanced_sample(context.data, per_class, context.seed("grasp", draw)))]

    def job_seed(self, context: JobContext) -> int:
        return context.seed("grasp", "xavier")

    def prune(self, model: nn.Module, batches: list[Batch], sparsity: float, seed: int,
              input_shape: tuple[int, ...] | None) -> Masks:
        """The batches are scored as given (a job gives the official class-sorted halves); `seed` draws
        the classifier's xavier re-draw in the scoring copy."""
        settings = self.settings
        scoring_copy = copy.deepcopy(model)
        if settings.reinit_classifier:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for module in scoring_copy.modules():
                    if isinstance(module, nn.Linear):
                        nn.init.xavier_normal_(module.weight)
        with bn_mode(scoring_copy, train=True):
            scores = grasp_scores(scoring_copy, batches, settings.temperature)
        return grasp_mask(scores, sparsity)
