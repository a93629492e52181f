"""`dense`: the unpruned network trained with the recipe, the paper's "Baseline" row and the control
on every curve. Its run is the trial's shared dense trajectory (`bench.trajectory`), which magnitude
and the LTH variants read too."""

from __future__ import annotations

from typing import Any

from bench.job_context import JobContext
from bench.spec import JobSpec
from bench.stages import StageNeed
from bench.train import TrainSettings
from bench.trajectory import planned_trajectory, trajectory_need
from methods.base import Method, PlannedPhase
from methods.registry import register


@register("dense")
class Dense(Method):
    takes_sparsity = False
    sparsity_mode = "none"
    ablations = ("none",)  # no mask to ablate

    def stage_needs(self, spec: JobSpec, recipe: TrainSettings) -> list[StageNeed]:
        return [trajectory_need(spec, recipe)]

    def planned_phases(self, spec: JobSpec, train_settings: TrainSettings, sparsity: float | None
                       ) -> list[PlannedPhase]:
        return [planned_trajectory(spec, train_settings)]

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        trajectory = context.dense_trajectory()
        model = context.new_model()
        model.load_state_dict(trajectory.final_state)
        return [context.record(model, None, trajectory.evaluation, trajectory.epochs, requested_sparsity=0.0)]
