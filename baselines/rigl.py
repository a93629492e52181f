"""`rigl`: Rigging the Lottery (Evci, Gale, Menick, Castro & Elsen, ICML 2020): sparse from the start; every
delta-T iterations until 75% of training, each layer drops the alpha(t) fraction of its smallest active
weights and regrows as many where the dense gradient of the current batch is largest.

Follows google-research/rigl `rigl/sparse_optimizers.py` (`SparseRigLOptimizer`) and
`rigl/sparse_optimizers_base.py` (`SparseRigLOptimizerBase.compute_gradients`/`apply_gradients`/
`generic_mask_update`, `SparseSETOptimizerBase._get_update_op`/`get_drop_fraction`): the grow score is
|dL/d(M W)| of the training batch of the update iteration (our weights off the mask are exactly zero, so
the gradient of W is that of M W, taken before the loop masks it; weight decay lives in the optimizer,
so the score is cross-entropy only, as RIGL's L2 on the raw kernel never reaches it); alpha = 0.3
cosine-annealed to 0 at T_end = 0.75 T; delta-T = 100; new connections at zero with zero momentum
(`grow_init` zeros, `rigl_acc_scale` 0); on an update iteration the SGD step is *not* taken. Initial mask:
RIGL's `random` init with ERK counts (the paper's CIFAR runs, rigl#8); the layer-wise rule is the
`distribution` setting (`bench.layer_density`).

Deviations (spec sections 0, 4d): updates at t % delta-T == 0 for 0 < t <= T_end (RIGL also fires at
t = 0; RIGL-TORCH and REPRO do not); no N(0, 1e-5) drop-score noise (inactive weights are never drop
candidates); ties by lower flat index; the lr schedule stays on the epoch clock (RIGL's global step pauses
on update iterations); a skipped step consumes its batch as in RIGL-TORCH (RIGL's pause re-runs the step
value on the next batch). delta-T is 100 iterations whatever T (RIGL keeps 100 for its 32k-step ImageNet
and 98k-step CIFAR runs), so a short run has few updates: 5 non-trivial ones at 800 iterations; a job with
T_end below delta-T updates every max(2, T_end // `short_job_updates`) iterations instead (prunebench's
choice, said at launch and recorded as `extra.update_interval`; `short_job_updates = 0` refuses it).
"""

from __future__ import annotations

import torch
from torch import nn

from baselines._sparse_training import (
    Clock,
    DropGrowSettings,
    DropGrowTraining,
    DropGrowUpdater,
    initial_masks,
)
from bench.job_context import JobContext
from bench.mask_updates import MaskUpdater
from methods.registry import register


class RigLUpdater(DropGrowUpdater):
    replaces_step = True

    def grow_scores(self, step: int, weights: dict[str, torch.Tensor], gradients: dict[str, torch.Tensor] | None
                    ) -> dict[str, torch.Tensor]:
        return {name: gradients[name].abs() for name in weights}


@register("rigl")
class RigL(DropGrowTraining):
    Settings = DropGrowSettings
    quick_hparams = {"update_interval": 2, "end_fraction": 1.0}

    def updater(self, context: JobContext, model: nn.Module, clock: Clock) -> MaskUpdater:
        return RigLUpdater(initial_masks(context, model, self.settings, self.name), clock, self.settings, None)
