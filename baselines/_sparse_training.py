"""What the sparse-training methods share (`gmp`, `set`, `rigl`): settings of the layer-wise density
rule, the training clock and its schedules, the per-layer drop/grow step, and the one "train while the
mask changes" job.

Read from google-research/rigl (`rigl/sparse_optimizers_base.py` `SparseSETOptimizerBase`:
`_get_update_op`, `is_mask_update_iter`, `get_drop_fraction`; `rigl/sparse_utils.py`) and
tensorflow/model-optimization (`tensorflow_model_optimization/python/core/sparsity/keras/
pruning_schedule.py` `PolynomialDecay`); the spec is /work/shared/specs/sparse-training.md.

- Clock: iterations t = 0 .. T-1 of the harness loop, T = epochs x batches per epoch; fractions of
  training are turned into iterations by round(fraction x T).
- Drop/grow (RIGL `_get_update_op`, per layer, never global): n_prune = int(a_l f) of the a_l active
  weights; keep the a_l - n_prune largest |W| among the active ones (stable: lower index first on ties,
  inactive weights are never candidates, RIGL's N(0, 1e-5) drop noise is left out); grow the n_prune
  highest grow scores among the positions not kept (the just-dropped ones included: a weight dropped and
  regrown keeps its value and momentum, rigl#5). New connections start at zero with zero momentum: they
  were off the mask, where the training loop keeps weights and momentum exactly zero.
"""

from __future__ import annotations

import csv
import io
import math
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bench.ablations import NO_ABLATION
from bench.atomic import write_text
from bench.data import dataset_sizes
from bench.errors import BenchError
from bench.job_context import JobContext
from bench.layer_density import DISTRIBUTIONS, ERK, check_distribution, random_distribution_masks
from bench.mask_updates import EVENT_COLUMNS, MaskUpdater
from bench.masks import Masks, layerwise_count_mask, prunable_parameters
from methods.base import Method

if TYPE_CHECKING:
    from bench.spec import JobSpec
    from bench.train import TrainSettings

MASK_UPDATES_FILE = "mask_updates.csv"
ANNEALS = ("cosine", "constant")


@dataclass(frozen=True)
class DistributionSettings:
    """The layer-wise density rule of a sparse-training method."""

    distribution: str = field(default=ERK, metadata={
        "help": f"layer-wise density rule: {', '.join(DISTRIBUTIONS)} (erk: RigL's Erdos-Renyi-Kernel)"})
    dense_first_layer: bool = field(default=False, metadata={
        "help": "leave the first conv unmasked and outside the allocation (RIGL's CIFAR script; the achieved "
                "sparsity is then a little below the requested one)"})

    def __post_init__(self) -> None:
        check_distribution(self.distribution, type(self).__name__)


@dataclass(frozen=True)
class DropGrowSettings(DistributionSettings):
    """RigL's schedule, shared by `set` and `rigl` (RIGL flags maskupdate_*, drop_fraction*)."""

    drop_fraction: float = field(default=0.3, metadata={"help": "alpha: fraction of active weights dropped per update"})
    drop_fraction_anneal: str = field(default="cosine", metadata={
        "help": f"annealing of alpha over [0, end]: {', '.join(ANNEALS)}"})
    update_interval: int = field(default=100, metadata={
        "help": "delta-T: iterations between mask updates (RIGL maskupdate_frequency; not scaled with T, but "
                "see short_job_updates for a job too short for one update)"})
    end_fraction: float = field(default=0.75, metadata={
        "help": "last update at this fraction of the training iterations (RIGL maskupdate_end_step, 75%)"})
    short_job_updates: int = field(default=10, metadata={
        "help": "a job too short for one update at delta-T (T_end < delta-T) updates every max(2, T_end // this) "
                "iterations instead, said at launch and in its record (prunebench's choice, not RIGL's); "
                "0: refuse such a job"})

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        if not 0.0 <= self.drop_fraction <= 1.0:
            raise BenchError(f"{owner} drop_fraction = {self.drop_fraction}; accepted: a float in [0, 1]")
        if self.drop_fraction_anneal not in ANNEALS:
            raise BenchError(f"{owner} drop_fraction_anneal = {self.drop_fraction_anneal!r}; accepted: "
                             f"{', '.join(ANNEALS)}")
        if self.update_interval < 1:
            raise BenchError(f"{owner} update_interval = {self.update_interval}; accepted: an integer >= 1")
        if not 0.0 < self.end_fraction <= 1.0:
            raise BenchError(f"{owner} end_fraction = {self.end_fraction}; accepted: a float in (0, 1]")
        if self.short_job_updates < 0:
            raise BenchError(f"{owner} short_job_updates = {self.short_job_updates}; accepted: an integer >= 0 "
                             "(0: refuse a job too short for one update)")


def update_interval_for(settings: DropGrowSettings, end: int) -> int | None:
    """delta-T of a job whose updates may fall at 0 < t <= `end`: the setting's where one update fits; in a
    shorter job every max(2, end // short_job_updates) iterations (2 at least, so that RigL, which skips
    the SGD step on an update iteration, still trains on half of them); None where no update fits or the
    setting refuses short jobs."""
    if end >= settings.update_interval:
        return settings.update_interval
    if settings.short_job_updates == 0 or end < 2:
        return None
    return max(2, end // settings.short_job_updates)


def cosine_drop_fraction(alpha: float, step: int, end: int) -> float:
    """RIGL's `cosine` anneal (TF `cosine_decay`): alpha/2 (1 + cos(pi min(t, end) / end))."""
    return alpha / 2 * (1 + math.cos(math.pi * min(step, end) / end))


def drop_fraction(settings: DropGrowSettings, step: int, end: int) -> float:
    """f(t) of the drop/grow schedule (`constant`: alpha)."""
    if settings.drop_fraction_anneal == "constant":
        return settings.drop_fraction
    return cosine_drop_fraction(settings.drop_fraction, step, end)


def gmp_sparsity(step: int, begin: int, end: int, initial: float, final: float) -> float:
    """Zhu & Gupta's cubic: s_f + (s_i - s_f)(1 - p)^3, p = clip((t - t0)/(t1 - t0), 0, 1) (TFMOT
    `PolynomialDecay`, power 3)."""
    progress = 1.0 if end == begin else min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


@dataclass(frozen=True)
class Clock:
    """Training iterations of a job: T in all, and per epoch."""

    steps_per_epoch: int
    total: int

    @classmethod
    def of(cls, context: JobContext) -> Clock:
        per_epoch = context.data.batches_per_epoch(context.train_settings.batch_size)
        return cls(per_epoch, per_epoch * context.train_settings.epochs)

    @classmethod
    def planned(cls, spec: JobSpec, recipe: TrainSettings) -> Clock | None:
        """The clock of a job before it runs, from its dataset's size (None where the source cannot tell
        it without loading the data)."""
        sizes = dataset_sizes(spec.dataset)
        if sizes is None:
            return None
        per_epoch = -(-sizes[0] // recipe.batch_size)  # as `DeviceData.batches_per_epoch`
        return cls(per_epoch, per_epoch * recipe.epochs)

    def at(self, fraction: float) -> int:
        """The iteration at `fraction` of training: round(fraction x T)."""
        return int(round(fraction * self.total))


def active_counts(masks: Masks) -> dict[str, int]:
    """Kept weights per layer (one device sync for all layers)."""
    counts = torch.stack([mask.sum() for mask in masks.values()]).tolist()
    return {name: int(count) for name, count in zip(masks, counts, strict=True)}


def drop_and_grow(weights: dict[str, torch.Tensor], masks: Masks, fraction: float,
                  grow_scores: dict[str, torch.Tensor]) -> Masks:
    """One RIGL drop/grow update of every layer (see the module docstring)."""
    active = active_counts(masks)
    dropped = {name: int(count * fraction) for name, count in active.items()}
    kept = layerwise_count_mask({name: weight.abs() for name, weight in weights.items()},
                                {name: active[name] - dropped[name] for name in masks}, current=masks)
    grown = layerwise_count_mask(grow_scores, dropped, current={name: 1 - mask for name, mask in kept.items()})
    return {name: kept[name] + grown[name] for name in masks}


def random_scores(weights: dict[str, torch.Tensor], seed_of_layer) -> dict[str, torch.Tensor]:
    """Uniform random scores per layer, drawn from `seed_of_layer(index)` (stateless, so a resumed job
    draws the same): the top-n of them is a uniform draw of n positions without replacement."""
    return {name: torch.rand(weight.shape, generator=torch.Generator().manual_seed(seed_of_layer(index)))
            .to(weight.device) for index, (name, weight) in enumerate(weights.items())}


def initial_masks(context: JobContext, model: nn.Module, settings: DistributionSettings, name: str) -> Masks:
    """RIGL's `random` mask init: the distribution's per-layer counts at uniformly random positions."""
    return random_distribution_masks(model, settings.distribution, context.sparsity, context.seed(name, "mask"),
                                     settings.dense_first_layer)


class DropGrowUpdater(MaskUpdater):
    """SET's and RigL's schedule: updates at t % delta-T == 0, 0 < t <= T_end (RIGL-TORCH and REPRO skip
    t = 0, RIGL fires there too), f(t) from `drop_fraction`; subclasses give the grow scores."""

    def __init__(self, masks: Masks, clock: Clock, settings: DropGrowSettings, seed_of: Any):
        super().__init__(masks, clock.steps_per_epoch)
        self.settings = settings
        self.end = clock.at(settings.end_fraction)
        self.interval = update_interval_for(settings, self.end)
        self.seed_of = seed_of

    def updates_at(self, step: int) -> bool:
        return self.interval is not None and 0 < step <= self.end and step % self.interval == 0

    @abstractmethod
    def grow_scores(self, step: int, weights: dict[str, torch.Tensor], gradients: dict[str, torch.Tensor] | None
                    ) -> dict[str, torch.Tensor]:
        """Scores of the positions that may grow (the n_prune highest among those not kept grow)."""

    def new_masks(self, step: int, model: nn.Module, gradients: dict[str, torch.Tensor] | None
                  ) -> tuple[Masks, float]:
        weights = {name: weight.detach() for name, weight in prunable_parameters(model).items()}
        fraction = drop_fraction(self.settings, step, self.end)
        return drop_and_grow(weights, self.masks, fraction, self.grow_scores(step, weights, gradients)), fraction


class SparseTraining(Method):
    """Train from the trial's init with a mask that an updater changes inside the one training loop."""

    ablations = (NO_ABLATION,)  # the mask changes inside the loop: never handed to it once at the start

    @abstractmethod
    def updater(self, context: JobContext, model: nn.Module, clock: Clock) -> MaskUpdater:
        """The job's updater, holding its initial mask (None: dense)."""

    def check_schedule(self, clock: Clock) -> None:
        """Raise a one-line `BenchError` where the schedule cannot run in `clock`'s iterations."""
        return None

    def schedule_notes(self, clock: Clock) -> list[str]:
        """What the schedule changes for a job of `clock`'s length (said at launch and in the job's log)."""
        return []

    def schedule_record(self, clock: Clock) -> dict[str, Any]:
        """The schedule values the job's record keeps beside its mask-update counts."""
        return {}

    def check_job(self, spec: JobSpec, recipe: TrainSettings) -> None:
        clock = Clock.planned(spec, recipe)
        if clock is not None:
            self.check_schedule(clock)

    def job_notes(self, spec: JobSpec, recipe: TrainSettings) -> list[str]:
        clock = Clock.planned(spec, recipe)
        return [] if clock is None else self.schedule_notes(clock)

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        model = context.new_model()
        clock = Clock.of(context)
        self.check_schedule(clock)
        for note in self.schedule_notes(clock):
            print(f"note: {note}", flush=True)
        updater = self.updater(context, model, clock)
        if not any(updater.updates_at(step) for step in range(clock.total)):
            raise BenchError(f"{self.name}: no mask update falls in the {clock.total} training iterations of this "
                             f"job ({self.settings}); accepted: a schedule with an update before the end, or --quick")
        result = context.train(model, "train", mask_updater=updater)
        events = updater.events
        write_text(context.job_dir / MASK_UPDATES_FILE, events_csv(events))
        return [context.record(model, result.masks, result.evaluation, result.epochs, mask_updates=len(events),
                               weights_moved=sum(event["moved"] for event in events),
                               distribution=self.settings.distribution, **self.schedule_record(clock))]


class DropGrowTraining(SparseTraining):
    """SET and RigL: RigL's schedule (`DropGrowSettings`), delta-T fitted to short jobs as the settings say."""

    def check_schedule(self, clock: Clock) -> None:
        end = clock.at(self.settings.end_fraction)
        if update_interval_for(self.settings, end) is None:
            fixes = ("" if end < 2 else f"--set hparams.{self.name}.short_job_updates=N with N >= 1, "
                     f"hparams.{self.name}.update_interval=N with N <= {end}, or ")
            raise BenchError(f"{self.name}: delta-T = {self.settings.update_interval} leaves no mask update in the "
                             f"{end} iterations before T_end of this {clock.total}-iteration job (short_job_updates "
                             f"= {self.settings.short_job_updates}); accepted: {fixes}more epochs")

    def schedule_notes(self, clock: Clock) -> list[str]:
        end = clock.at(self.settings.end_fraction)
        interval = update_interval_for(self.settings, end)
        if interval is None or interval == self.settings.update_interval:
            return []
        return [f"{self.name}: delta-T = {self.settings.update_interval} leaves no mask update in the {end} iterations "
                f"before T_end of this {clock.total}-iteration job; it updates every {interval} iterations instead "
                f"({end // interval} updates; hparams.{self.name}.short_job_updates = "
                f"{self.settings.short_job_updates}, 0 refuses such a job)"]

    def schedule_record(self, clock: Clock) -> dict[str, Any]:
        return {"update_interval": update_interval_for(self.settings, clock.at(self.settings.end_fraction))}


def events_csv(events: list[dict[str, float | int]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, EVENT_COLUMNS)
    writer.writeheader()
    writer.writerows(events)
    return buffer.getvalue()
