"""The dense trajectory: the recipe's dense run of one (dataset, arch, trial, recipe), trained once.

Every method that starts with the dense run reads this one stage (`bench.stages`) instead of training
its own copy: the `dense` job (its record), `magnitude` (the weights it prunes), round 0 of the three
LTH variants (open_lth's `lottery/runner.py` level 0) and `lth-rewind`'s rewind point. All start from
the trial's init theta_0 and see the trial's batches, so the run is the same whoever trains it, and a
job served by the stage ends with the numbers it had when it trained the run itself (CPU).

The stage folder holds the run's phase checkpoint (`ckpt/train.pt`: an interrupted run resumes),
its `epochs.csv` (the epochs are trained, and logged, once), `snapshots/epoch<e>.pt` (the full state,
weights and BN statistics, after epoch e, with the test evaluation there; checksummed, `bench.atomic`) and `result.pt` (the final
state, its evaluation, epochs and seconds).

Snapshot epochs are *requested*, never part of the key, so the folder does not depend on who asks:
- up front: a method declares the epochs it will read (`Method.stage_needs`, e.g. lth-rewind's
  `rewind_epoch`); executors add the plan's requests to the stage's `requests.json` before any job
  runs (and each job adds its own before it reads), and the run saves every requested epoch as it
  passes it;
- later: an epoch asked for after the run was trained (a later grid with another rewind epoch) is
  produced by replaying the run's prefix from theta_0 (phase `replay<e>`: the same schedule, the same
  batches, stopped after epoch e), which gives the identical state on CPU. Its epochs are logged too.
Epoch 0 is theta_0 itself and the last epoch the final state; neither needs a snapshot.

A prefix without the whole run: a job that needs only the first epochs (IMC's pretraining: theta_R and
theta_P are the states after `rewind_epoch` and `pretrain_epochs` epochs of this very run) calls
`TrajectoryRun.prefix(e)`. If the run is not done, it trains the run's own phase up to epoch e and
checkpoints there unfinished (`Trainer.train(stop_epoch=e)`), so the full run, when a job needs it,
resumes from that checkpoint: the first e epochs are trained once whoever asks first. A snapshot's
training time is the run's cumulative seconds up to it, read from `epochs.csv`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.atomic import save_checked
from bench.errors import BenchError
from bench.masks import Masks
from bench.spec import JobSpec
from bench.stages import RESULT_FILE, StageNeed, StageSpec, load_value, recipe_key, requested, stage_lock
from bench.train import EpochLog, Evaluation, Trainer, TrainSettings, evaluate
from methods.registry import PlannedPhase

TRAJECTORY_STAGE = "dense-trajectory"
TRAJECTORY_VERSION = 1
"""Bump when the dense run's computation changes (old folders are then not reused)."""
PHASE = "train"


def trajectory_stage(spec: JobSpec, recipe: TrainSettings) -> StageSpec:
    return StageSpec(TRAJECTORY_STAGE, recipe_key(spec, recipe), TRAJECTORY_VERSION)


def trajectory_need(spec: JobSpec, recipe: TrainSettings, snapshots: Iterable[int] = ()) -> StageNeed:
    """What a method declares: the dense trajectory of its job, and the snapshot epochs it will read."""
    return StageNeed(trajectory_stage(spec, recipe), tuple(sorted(set(snapshots))))


def state_on_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


@dataclass
class TrajectoryRun:
    """How to train (or replay part of) the dense run in its stage folder."""

    folder: Path
    trainer: Trainer
    recipe: TrainSettings
    new_model: Callable[[], nn.Module]

    def snapshot_path(self, epoch: int) -> Path:
        return self.folder / "snapshots" / f"epoch{epoch}.pt"

    def keep_snapshots(self, epochs: set[int]):
        """An epoch hook saving the state (and its evaluation) after each epoch in `epochs`."""

        def keep(epoch: int, model: nn.Module, masks: Masks | None) -> None:
            if epoch + 1 in epochs:
                save_checked(self.snapshot_path(epoch + 1),
                             {"model": state_on_cpu(model),
                              "evaluation": vars(evaluate(model, self.trainer.data, self.recipe.precision))})

        return keep

    def wanted(self, upto: int) -> set[int]:
        """Requested epochs in (0, upto] without a snapshot yet (0 is theta_0, the last epoch the result)."""
        return {epoch for epoch in requested(self.folder)
                if 0 < epoch <= upto and epoch < self.recipe.epochs and not self.snapshot_path(epoch).exists()}

    def compute(self, folder: Path) -> dict[str, Any]:
        """The stage's computation: the full run, keeping the requested snapshots."""
        trainer = self.trainer.sibling(folder)
        model = self.new_model()
        result = trainer.train(model, PHASE, self.recipe, on_epoch_end=self.keep_snapshots(self.wanted(self.recipe.epochs)))
        return {"model": state_on_cpu(model), "evaluation": vars(result.evaluation), "epochs": result.epochs,
                "seconds": result.seconds}

    def prefix(self, epoch: int) -> dict[str, Any]:
        """The snapshot after `epoch` epochs (0 < epoch < the run's epochs) with its cumulative training
        `seconds`: read, or trained now (the run's prefix if the run is not done, else a replay)."""
        last = self.recipe.epochs
        if not 0 < epoch < last:
            raise BenchError(f"dense trajectory snapshot at epoch {epoch}; accepted: 1 .. {last - 1} "
                             "(0 is the init, the last epoch the final state)")
        path = self.snapshot_path(epoch)
        value = load_value(path)  # a corrupt snapshot is set aside and trained again
        if value is None:
            with stage_lock(self.folder):
                value = load_value(path)
                if value is None:
                    self.train_to(epoch)
                    value = load_value(path)
        if value is None:
            raise BenchError(f"dense trajectory snapshot {path} could not be written or read back")
        return value | {"seconds": self.seconds_until(epoch)}

    def train_to(self, epoch: int) -> None:
        """Save the snapshot at `epoch` (and those requested before it): continue the run's own phase up to
        `epoch` where it has not passed it and the run is not done, else replay the prefix."""
        trainer = self.trainer.sibling(self.folder)
        checkpoint = trainer.load_checkpoint(PHASE)
        if (self.folder / RESULT_FILE).exists() or (checkpoint is not None and checkpoint["next_epoch"] >= epoch):
            self.replay(epoch)
            return
        model = self.new_model()
        trainer.train(model, PHASE, self.recipe, stop_epoch=epoch,
                      on_epoch_end=self.keep_snapshots(self.wanted(epoch) | {epoch}))

    def seconds_until(self, epoch: int) -> float:
        """The run's training seconds over its first `epoch` epochs (its own phase, else a replay's)."""
        rows = [row for row in EpochLog(self.folder / "epochs.csv").rows() if int(row["epoch"]) == epoch - 1
                and (row["phase"] == PHASE or row["phase"].startswith("replay"))]
        rows.sort(key=lambda row: row["phase"] != PHASE)
        return float(rows[0]["seconds"]) if rows else 0.0

    def replay(self, epoch: int) -> None:
        """Replay the run's first `epoch` epochs from theta_0 to save the snapshots requested up to it."""
        trainer = self.trainer.sibling(self.folder)
        model = self.new_model()
        result = trainer.train(model, f"replay{epoch}", self.recipe, stop_epoch=epoch,
                               on_epoch_end=self.keep_snapshots(self.wanted(epoch) | {epoch}))
        if not self.snapshot_path(epoch).exists():  # the replay had finished before (its snapshot set aside)
            save_checked(self.snapshot_path(epoch), {"model": state_on_cpu(model), "evaluation": vars(result.evaluation)})


class Trajectory:
    """The dense run as a job reads it: final state and evaluation, epochs, snapshots."""

    def __init__(self, value: dict[str, Any], run: TrajectoryRun):
        self.value = value
        self.run = run

    @property
    def final_state(self) -> dict[str, torch.Tensor]:
        return self.value["model"]

    @property
    def evaluation(self) -> Evaluation:
        return Evaluation(**self.value["evaluation"])

    @property
    def epochs(self) -> int:
        return self.value["epochs"]

    def snapshot(self, epoch: int) -> dict[str, Any]:
        """{"model": state after `epoch` epochs, "evaluation", "seconds"} (replayed if not kept)."""
        return self.run.prefix(epoch)

    def state_at(self, epoch: int) -> dict[str, torch.Tensor]:
        """The full state after `epoch` epochs: theta_0 at 0, the final state at the last epoch."""
        if epoch == 0:
            return state_on_cpu(self.run.new_model())
        if epoch == self.run.recipe.epochs:
            return self.final_state
        return self.snapshot(epoch)["model"]


def planned_trajectory(spec: JobSpec, recipe: TrainSettings) -> PlannedPhase:
    """The dense trajectory as a method's `planned_phases` gives it to the cost: once per stage."""
    return PlannedPhase.training(recipe, stage=trajectory_stage(spec, recipe).label)
