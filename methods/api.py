"""The one module a method author imports: everything a pruning method needs, documented here.

    from methods.api import JobContext, PruneAtInit, global_mask, loss_gradients, prunable_parameters, register

It lives in `methods/` beside the contract it re-exports (`bench.api` is the other direction: prunebench's
pruners in *your* training loop). Names not listed here, and every module whose name starts with `_`,
are private and may change. The contract a method fulfils (what `bench.check NAME` verifies) is in
`docs/extending.md`.

Registering
- `register(name)`: class decorator that registers a `Method` subclass under `name` (used in grids,
  `--methods`, job ids). A package makes its module a plugin through the entry-point group
  `prunebench.methods` (or a module on the path through `PRUNEBENCH_PLUGINS`).
- `register_arch(name)`: decorator registering an architecture constructor `f(ModelInput) -> nn.Module`
  (entry-point group `prunebench.archs`). `ModelInput` holds `in_channels`, `num_classes`, `image_size`.
- `register_dataset(name)`: decorator registering a dataset `Source` (entry-point group
  `prunebench.datasets`); `Source(load, cache_key, sizes)`: `load(DataSettings) -> ImageData` with uint8
  images, `cache_key(DataSettings) -> dict` (what the decoded cache depends on), optional `sizes`.
  `ImageData(train_images, train_labels, test_images, test_labels, num_classes, mean, std, augment)`:
  uint8 (N, C, H, W) images and int64 labels; `channel_stats(images) -> (mean, std)` on the [0, 1] scale.

The method contract
- `Method`: subclass it; class attributes `Settings` (a frozen dataclass, help in field metadata),
  `version` (bump when a code change changes results: old jobs then run again), `sparsity_mode`
  ("levels": one job per sparsity; "rounds": one iterative job; "none": no requested sparsity),
  `takes_sparsity`, `finds_sparsity` (records the sparsity it finds, no tolerance check),
  `quick_hparams` (settings for a cheap smoke run), `ablations`; method `run(context)` returns one
  record per round, each `context.record(...)`; optionally `planned_phases` (what `--dry-run` counts)
  and `stage_needs` (shared stages it reads).
- `JobContext`: what `run` gets: `sparsity`, `settings`, `data` (`DeviceData`), `device`, `trial`,
  `seed(*names)`, `new_model()` (the trial's shared init), `train(model, phase, masks=...)` (the one
  resumable training loop; pruned weights stay zero), `timed_scoring()`, `dense_trajectory()`,
  `dense_state(epoch)`, `save_snapshot`/`load_snapshot`, `schedule(**changes)`, `record(...)`.
- `Pruner`: a method that makes a mask without training: `prune(model, batches, sparsity, seed,
  input_shape) -> Masks`; also what `bench.api.prune` runs in a user's own loop.
- `NoSettings`: the `Settings` of a method without settings. `PlannedPhase`: an entry of `planned_phases`.
- `TrainSettings`: the training recipe (`context.train_settings`); `Evaluation`: a test pass's result.

Prune at init (score theta_0, mask, train: SNIP, GraSP, SynFlow)
- `PruneAtInit`: subclass it and write `prune` (and `job_batches` where it scores data); the base
  scores once, snapshots the mask for resume and trains with the recipe.
- `loss_gradients(model, batches, temperature=1.0, weighting="sum")`: gradients of the loss w.r.t. the
  prunable weights (`torch.autograd.grad`; the model's `.grad` untouched).
- `hessian_gradient_product(model, batches, temperature=1.0) -> (g, Hg)`: GraSP's Hessian-gradient products.
- `scoring_batches(data, count, batch_size, seed, augment=None)`: `count` seeded training images in batches.
- `class_balanced_sample(data, per_class, seed)`: one batch per class (GraSP's sampler).
- `batch_loss(model, batch, temperature=1.0)`: the mean cross-entropy of one batch. `Batch`: (images, labels).
- `bn_mode(model, train)`: context manager running scoring in BatchNorm train or eval mode.
- `SCORING_BATCH_SIZE`: the batch size scoring data is drawn with.

Masks (exact counts: a mask at sparsity s keeps exactly round((1 - s) * N) prunable weights)
- `prunable_parameters(model)`: name -> weight of every Conv2d and Linear (biases and BN never).
- `global_mask(scores, sparsity, current=None)`: one global threshold over `scores`; `current` limits it
  to surviving weights (iterative pruning).
- `layerwise_mask(scores, densities)`, `uniform_layerwise_mask(scores, sparsity)`: per-layer thresholds.
- `magnitude_scores(model)`: |w| of the prunable weights. `apply_masks(model, masks)`: zero pruned weights.
- `Masks`: name -> 0/1 float tensor shaped like the weight.

Iterative magnitude pruning
- `IterativeMagnitudePruning`: the IMP loop (open_lth); subclass it and write `surviving_weights`
  (what the survivors become before each round's training: a `RoundStart`), as `lth-reinit/rewind/finetune` do.
- `round_sparsity(round, pruning_fraction)`: 1 - (1 - f)^r.

Sparse training (a mask that changes while the net trains: GMP, SET, RigL)
- `MaskUpdater`: the training loop's mask-update hook (`context.train(..., mask_updater=...)`): says at
  which iterations it updates (`updates_at`) and changes the live mask there; the loop keeps pruned
  weights and their momentum at zero and checkpoints the updater's state.
- `SparseTraining`, `DropGrowUpdater`, `DropGrowSettings`: the shared base of SET and RigL (a per-layer
  density distribution, drop-and-grow at a cosine-decayed fraction); `initial_masks(context, model,
  settings, name)`: the seeded start mask of that distribution.
- `layerwise_count_mask(scores, counts)`, `ones_masks(model)`: masks with exact per-layer counts; all ones.

Errors
- `BenchError`: raise it with one line naming the bad value and the accepted ones (bad settings).
"""

from __future__ import annotations

from baselines._scoring import (
    SCORING_BATCH_SIZE,
    Batch,
    PruneAtInit,
    batch_loss,
    bn_mode,
    class_balanced_sample,
    hessian_gradient_product,
    loss_gradients,
    scoring_batches,
)
from baselines._sparse_training import DropGrowSettings, DropGrowUpdater, SparseTraining, initial_masks
from baselines.lth import IterativeMagnitudePruning, RoundStart, round_sparsity
from bench.data import DATASETS, DataSettings, DeviceData, ImageData
from bench.data.core import Source, channel_stats
from bench.errors import BenchError
from bench.job_context import JobContext
from bench.mask_updates import MaskUpdater
from bench.masks import (
    Masks,
    apply_masks,
    global_mask,
    layerwise_count_mask,
    layerwise_mask,
    magnitude_scores,
    ones_masks,
    prunable_parameters,
    uniform_layerwise_mask,
)
from bench.models import ARCHS, ModelInput
from bench.train import Evaluation, TrainSettings
from methods.base import Method, NoSettings, PlannedPhase, Pruner
from methods.registry import register

register_arch = ARCHS.register
register_dataset = DATASETS.register

__all__ = [
    "SCORING_BATCH_SIZE", "Batch", "BenchError", "DataSettings", "DeviceData", "DropGrowSettings", "DropGrowUpdater",
    "Evaluation", "ImageData", "MaskUpdater", "SparseTraining", "initial_masks", "layerwise_count_mask", "ones_masks",
    "IterativeMagnitudePruning", "JobContext", "Masks", "Method", "ModelInput", "NoSettings", "PlannedPhase",
    "PruneAtInit", "Pruner", "RoundStart", "Source", "TrainSettings", "apply_masks", "batch_loss", "bn_mode",
    "channel_stats", "class_balanced_sample", "global_mask", "hessian_gradient_product", "layerwise_mask", "loss_gradients",
    "magnitude_scores", "prunable_parameters", "register", "register_arch", "register_dataset", "round_sparsity",
    "scoring_batches", "uniform_layerwise_mask",
]
