"""`lth-reinit`, `lth-rewind`, `lth-finetune`: iterative magnitude pruning (IMP) with the three fates of
the surviving weights compared in the paper (Lottery Ticket Hypothesis, Frankle & Carbin, ICLR 2019;
rewinding, Frankle et al. 2020 / Renda et al. 2020; fine-tuning, Liu et al. ICLR 2019).

One IMP loop (`IterativeMagnitudePruning.run`) follows facebookresearch/open_lth (`lottery/runner.py`,
`pruning/sparse_global.py`): round 0 trains the dense net with the recipe; round r >= 1 prunes the
globally smallest-|w| surviving weights of round r-1's trained net down to sparsity
1 - (1 - f)^r (f = `pruning_fraction`, 0.1 of the remaining weights per round; exact count, so rounding
never drifts), then trains the masked net again. The variants differ only in what the surviving weights
become before that training (`surviving_weights`):

- `lth-reinit`: a fresh random init, redrawn every round (the random-reinitialisation control of
  rahulvigneswaran/Lottery-Ticket-Hypothesis-in-Pytorch `--prune_type reinit`; the next round's mask
  comes from this run's own trained weights), full recipe;
- `lth-rewind`: the dense run's full state at the end of epoch `rewind_epoch` (weights, BN affine and
  running statistics: open_lth's `_establish_initial_weights`), then the recipe from its start
  (`rewind_schedule = restart`, A.4 of the paper) or from the rewind epoch on, with its learning rates
  and data order (`resume`, open_lth's `--rewinding_steps`);
- `lth-finetune`: the trained weights of the previous round, trained on for `finetune_epochs` at a
  constant lr 0.001 (Eric-mingjie/rethinking-network-pruning `cifar_finetune.py`).

Round 0 is the trial's shared dense trajectory (`bench.trajectory`: trained once for `dense`,
`magnitude` and the three variants), and lth-rewind's rewind point is that run's snapshot after
`rewind_epoch` epochs, declared up front (`stage_needs`) so the run keeps it as it passes it.
One job runs every round up to its requested sparsity (or `rounds`) and returns one record per round
r >= 1 with the round's sparsity, accuracy, cumulative epochs (dense run included) and cumulative
runtime; every round is a resumable training phase, so an interrupted job resumes mid-round.
Deviation: open_lth prunes 20% per level by default; the paper's sparsities 0.10, 0.19, 0.27, ... need
10%, which prunebench takes.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from bench.errors import BenchError
from bench.job_context import JobContext
from bench.masks import global_mask, magnitude_scores
from bench.record_check import SPARSITY_TOLERANCE
from bench.spec import JobSpec
from bench.stages import StageNeed
from bench.train import TrainSettings
from bench.trajectory import planned_trajectory, trajectory_need
from methods.base import Method, PlannedPhase
from methods.registry import register

REWIND_SCHEDULES = ("restart", "resume")


def require(condition: bool, setting: str, value: object, accepted: str) -> None:
    """Raise the one-line settings error unless `condition` holds."""
    if not condition:
        raise BenchError(f"{setting} = {value!r}; accepted: {accepted}")


@dataclass(frozen=True)
class LthSettings:
    pruning_fraction: float = field(default=0.1, metadata={"help": "fraction of the surviving weights pruned per round"})
    rounds: int = field(
        default=0, metadata={"help": "pruning rounds; 0 = as many as reach the job's requested sparsity"})

    def __post_init__(self) -> None:
        require(0.0 < self.pruning_fraction < 1.0, "pruning_fraction", self.pruning_fraction, "a float in (0, 1)")
        require(self.rounds >= 0, "rounds", self.rounds, "an integer >= 0")


@dataclass(frozen=True)
class RewindSettings(LthSettings):
    rewind_epoch: int = field(default=10, metadata={"help": "epoch of the dense run whose state is rewound to"})
    rewind_schedule: str = field(
        default="restart", metadata={"help": "restart: the recipe from epoch 0; resume: from rewind_epoch on"})

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.rewind_schedule in REWIND_SCHEDULES, "rewind_schedule", self.rewind_schedule,
                ", ".join(REWIND_SCHEDULES))
        require(self.rewind_epoch >= 0, "rewind_epoch", self.rewind_epoch, "an integer >= 0")


@dataclass(frozen=True)
class FinetuneSettings(LthSettings):
    finetune_epochs: int = field(default=0, metadata={"help": "epochs per round; 0 = the recipe's epochs (160)"})
    finetune_lr: float = field(default=0.001, metadata={"help": "constant learning rate of fine-tuning"})


def round_sparsity(round_index: int, pruning_fraction: float) -> float:
    """Sparsity after `round_index` rounds that each prune `pruning_fraction` of the survivors."""
    return 1.0 - (1.0 - pruning_fraction) ** round_index


def rounds_for(sparsity: float, pruning_fraction: float) -> int:
    """The fewest rounds whose sparsity reaches `sparsity` (within float error)."""
    if sparsity <= 0.0:
        return 0
    return math.ceil(math.log(1.0 - sparsity) / math.log(1.0 - pruning_fraction) - 1e-9)


@dataclass
class RoundStart:
    """What round r trains: the model holding the surviving weights' new values, the schedule, its start."""

    model: nn.Module
    settings: TrainSettings
    start_epoch: int = 0


class IterativeMagnitudePruning(Method):
    """The IMP loop; subclasses say what the surviving weights become each round."""

    Settings = LthSettings
    sparsity_mode = "rounds"
    """One job whose rounds cover a grid's levels: it asks for the largest and records every round."""
    quick_hparams = {"pruning_fraction": 0.3}  # as many rounds as the sparsity needs: 2 for 0.5, 7 for 0.9

    def rounds(self, sparsity: float | None) -> int:
        return self.settings.rounds or rounds_for(sparsity, self.settings.pruning_fraction)

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        settings = self.settings
        rounds = self.rounds(context.sparsity)
        dense = context.dense_trajectory(self.snapshot_epochs(context.train_settings))
        model = context.new_model()
        model.load_state_dict(dense.final_state)
        epochs, masks, records = dense.epochs, None, []
        for round_index in range(1, rounds + 1):
            target = round_sparsity(round_index, settings.pruning_fraction)
            with context.timed_scoring():
                masks = global_mask(magnitude_scores(model), target, current=masks)
            start = self.surviving_weights(context, model, round_index)
            model = start.model
            result = context.train(model, f"round{round_index}", masks=masks, settings=start.settings,
                                   start_epoch=start.start_epoch)
            masks = result.masks  # the mask trained (an ablated one under the shuffle ablation)
            epochs += result.epochs
            records.append(context.record(model, result.masks, result.evaluation, epochs, round=round_index,
                                          requested_sparsity=target, job_requested_sparsity=context.sparsity))
        if not records:
            raise BenchError(f"{self.name} ran no pruning round for sparsity {context.sparsity}; accepted: a "
                             f"sparsity >= {settings.pruning_fraction} or rounds >= 1")
        return records

    def stage_needs(self, spec: JobSpec, recipe: TrainSettings) -> list[StageNeed]:
        return [trajectory_need(spec, recipe, self.snapshot_epochs(recipe))]

    def check_job(self, spec: JobSpec, recipe: TrainSettings) -> None:
        """A job whose `rounds` cannot reach its requested sparsity fails here, before training."""
        settings = self.settings
        if not settings.rounds or not isinstance(spec.sparsity, float):
            return
        reached = round_sparsity(settings.rounds, settings.pruning_fraction)
        if reached < spec.sparsity - SPARSITY_TOLERANCE:
            raise BenchError(f"{self.name} with rounds = {settings.rounds} and pruning_fraction = "
                             f"{settings.pruning_fraction} reaches sparsity {reached:.3f}, not the requested "
                             f"{spec.sparsity}; accepted: rounds = 0 (as many as needed: "
                             f"{rounds_for(spec.sparsity, settings.pruning_fraction)}) or a lower sparsity")

    def snapshot_epochs(self, recipe: TrainSettings) -> tuple[int, ...]:
        """Epochs of the dense run whose state the rounds start from (rewinding); none by default."""
        return ()

    def planned_phases(self, spec: JobSpec, train_settings: TrainSettings, sparsity: float | None
                       ) -> list[PlannedPhase] | None:
        if sparsity is None and not self.settings.rounds:
            return None  # the rounds follow a sparsity found at run time
        schedule, start_epoch = self.round_schedule(train_settings)
        return [planned_trajectory(spec, train_settings)] + [
            PlannedPhase.training(schedule, start_epoch) for _ in range(self.rounds(sparsity))]

    def round_schedule(self, recipe: TrainSettings) -> tuple[TrainSettings, int]:
        """(schedule, first epoch) of every pruning round: the recipe from epoch 0 by default."""
        return recipe, 0

    @abstractmethod
    def surviving_weights(self, context: JobContext, trained: nn.Module, round_index: int) -> RoundStart:
        """The model round `round_index` trains (masked by the loop) and how it trains it."""


@register("lth-reinit")
class LthReinit(IterativeMagnitudePruning):
    def surviving_weights(self, context: JobContext, trained: nn.Module, round_index: int) -> RoundStart:
        return RoundStart(context.new_model("reinit", round_index), *self.round_schedule(context.train_settings))


@register("lth-rewind")
class LthRewind(IterativeMagnitudePruning):
    Settings = RewindSettings
    quick_hparams = {"pruning_fraction": 0.3, "rewind_epoch": 1}

    def snapshot_epochs(self, recipe: TrainSettings) -> tuple[int, ...]:
        rewind_epoch = self.settings.rewind_epoch
        if rewind_epoch > recipe.epochs:
            raise BenchError(f"lth-rewind rewind_epoch = {rewind_epoch} is past the "
                             f"{recipe.epochs}-epoch run; accepted: 0 .. epochs")
        return (rewind_epoch,)

    def surviving_weights(self, context: JobContext, trained: nn.Module, round_index: int) -> RoundStart:
        model = context.new_model()
        model.load_state_dict(context.dense_trajectory().state_at(self.settings.rewind_epoch))
        return RoundStart(model, *self.round_schedule(context.train_settings))

    def round_schedule(self, recipe: TrainSettings) -> tuple[TrainSettings, int]:
        resume = self.settings.rewind_schedule == "resume"
        return recipe, self.settings.rewind_epoch if resume else 0


@register("lth-finetune")
class LthFinetune(IterativeMagnitudePruning):
    Settings = FinetuneSettings

    def surviving_weights(self, context: JobContext, trained: nn.Module, round_index: int) -> RoundStart:
        return RoundStart(trained, *self.round_schedule(context.train_settings))

    def round_schedule(self, recipe: TrainSettings) -> tuple[TrainSettings, int]:
        epochs = self.settings.finetune_epochs or recipe.epochs
        return replace(recipe, epochs=epochs, lr=self.settings.finetune_lr, lr_drops=()), 0
