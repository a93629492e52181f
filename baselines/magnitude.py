"""`magnitude`: train dense, prune once by global weight magnitude, fine-tune (the simplest control).

Han et al. 2015 as in open_lth's `sparse_global` (one global |w| threshold over every prunable weight)
in one shot. Fine-tuning reruns the recipe's schedule with the learning rate scaled by
`finetune_lr_scale` (0.1 default: 0.01, then 0.001, 0.0001), as IMC's FineTuning variant does, so the
two are comparable. The dense training is the trial's shared dense trajectory (`bench.trajectory`).
Epochs recorded = training + fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from bench.job_context import JobContext
from bench.masks import Masks, global_mask, magnitude_scores
from bench.spec import JobSpec
from bench.stages import StageNeed
from bench.train import TrainSettings
from bench.trajectory import planned_trajectory, trajectory_need
from methods.base import Method, PlannedPhase, Pruner
from methods.registry import register


@dataclass(frozen=True)
class MagnitudeSettings:
    finetune_lr_scale: float = field(default=0.1, metadata={"help": "fine-tuning lr = recipe lr x this"})


@register("magnitude")
class Magnitude(Method, Pruner):
    Settings = MagnitudeSettings

    def stage_needs(self, spec: JobSpec, recipe: TrainSettings) -> list[StageNeed]:
        return [trajectory_need(spec, recipe)]

    def prune(self, model: nn.Module, batches: list, sparsity: float, seed: int,
              input_shape: tuple[int, ...] | None) -> Masks:
        """One global |w| threshold over the weights `model` has now (trained, or an init)."""
        return global_mask(magnitude_scores(model), sparsity)

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        trained = context.dense_trajectory()
        model = context.new_model()
        model.load_state_dict(trained.final_state)
        with context.timed_scoring():
            masks = self.prune(model, [], context.sparsity, context.seed(self.name), None)
        result = context.train(model, "finetune", masks=masks, settings=self.finetune_schedule(context.train_settings))
        return [context.record(model, result.masks, result.evaluation, trained.epochs + result.epochs,
                               accuracy_before_finetune=trained.evaluation.accuracy)]

    def finetune_schedule(self, recipe: TrainSettings) -> TrainSettings:
        return replace(recipe, lr=recipe.lr * self.settings.finetune_lr_scale)

    def planned_phases(self, spec: JobSpec, train_settings: TrainSettings, sparsity: float | None
                       ) -> list[PlannedPhase]:
        return [planned_trajectory(spec, train_settings), PlannedPhase.training(self.finetune_schedule(train_settings))]
