"""`dense`: the unpruned network trained with the recipe, the paper's "Baseline" row and the control
on every curve."""

from __future__ import annotations

from typing import Any

from methods.base import JobContext, Method
from methods.registry import register


@register("dense")
class Dense(Method):
    takes_sparsity = False
    ablations = ("none",)  # no mask to ablate

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        model = context.new_model()
        result = context.train(model, "train")
        return [context.record(model, None, result.evaluation, result.epochs, requested_sparsity=0.0)]
