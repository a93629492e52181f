"""The job runtime: what a method's `run(context)` gets (`JobContext`) while it runs one job.

The context owns everything shared: the trial's init (`new_model`), the one training loop (`train`),
exact-count thresholding (`bench.masks`), timers for scoring/analysis time, snapshots in `ckpt/`, the
stages that jobs share (`use_stage`, `dense_trajectory`: `bench.stages`), the common record fields
(`record`, checked by `bench.record_check`) and the job's sanity ablation (`bench.ablations`: applied
where every mask is handed to the training loop, and around the method's run for `invert`), so that
methods differ only in what makes them different. `bench.jobs` builds it; a method reaches it through
`methods.api.JobContext`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bench.ablations import ABLATIONS, NO_ABLATION, shuffle_masks
from bench.atomic import CorruptFileError, load_checked, save_checked
from bench.data import DeviceData
from bench.devices import device_name
from bench.flops import layer_macs, pruned_macs
from bench.masks import Masks, check_binary, keep_lowest, layer_table, sparsity_report
from bench.models import ModelInput, build_model
from bench.seeds import derive_seed
from bench.spec import JobSpec
from bench.stages import COMPUTED, LOADED, StageResult, StageSpec, obtain, request
from bench.train import Evaluation, PhaseResult, Trainer, TrainSettings
from bench.trajectory import TRAJECTORY_STAGE, Trajectory, TrajectoryRun, state_on_cpu, trajectory_stage

if TYPE_CHECKING:
    from methods.registry import Method


@dataclass
class DenseState:
    """The dense trajectory's state after some epochs, its test evaluation (None at the init) and the
    run's training seconds up to it."""

    state: dict[str, torch.Tensor]
    evaluation: Evaluation | None
    seconds: float


class JobContext:
    """What a method may use while it runs one job."""

    def __init__(self, job_id: str, spec: JobSpec, method: Method, data: DeviceData, job_dir: Path,
                 trainer: Trainer, train_settings: TrainSettings, sparsity: float | None):
        self.job_id = job_id
        self.spec = spec
        self.method = method
        self.data = data
        self.device = data.device
        self.job_dir = job_dir
        self.trainer = trainer
        self.train_settings = train_settings
        self.sparsity = sparsity
        self.model_input = ModelInput(data.data.in_channels, data.data.num_classes, data.data.image_size)
        self.train_seconds = 0.0
        self.scoring_seconds = 0.0
        self.layer_rows: list[dict[str, Any]] = []
        self._layer_macs: dict[str, int] | None = None
        self.last_recorded: tuple[nn.Module, Masks | None] | None = None
        """The model and masks of the latest record (the contract test inspects them)."""
        self.stages: dict[str, str] = {}
        """Stage name -> "computed" or "loaded": the shared stages this job used (in every record)."""
        self._stage_results: dict[Path, StageResult] = {}
        self._trajectory_seconds = 0.0
        self.ablation = ABLATIONS.get(spec.ablation)
        self.ablated_phases: list[str] = []

    @property
    def results_dir(self) -> Path:
        """The results root holding `jobs/` (and caches shared between jobs, e.g. IMC's analysis)."""
        return self.job_dir.parent.parent

    @property
    def trial(self) -> int:
        return self.spec.trial

    @property
    def settings(self) -> Any:
        return self.method.settings

    def seed(self, *names: object) -> int:
        """A seed of this trial for the named use (see `bench.seeds`)."""
        return derive_seed(self.trial, *names)

    def new_model(self, *seed_names: object) -> nn.Module:
        """A freshly initialised model on the device; by default the trial's shared init theta_0."""
        model = build_model(self.spec.arch, self.model_input, self.seed(*(seed_names or ("init",))))
        return model.to(self.device)

    def run_method(self) -> list[dict[str, Any]]:
        """The method's records for this job, under its ablation; an ablation that changed nothing fails."""
        with keep_lowest(self.ablation.keeps_lowest) as ranking:
            records = self.method.run(self)
        acted = bool(self.ablated_phases) if self.ablation.acts_on_masks else ranking.thresholds > 0
        if self.ablation.name != NO_ABLATION and not acted:
            raise RuntimeError(f"ablation {self.ablation.name} changed nothing in method {self.method.name}: "
                               "no mask reached the training loop or no score was thresholded")
        return records

    def train(self, model: nn.Module, phase: str, masks: Masks | None = None, settings: TrainSettings | None = None,
              **options: Any) -> PhaseResult:
        """Train through the shared loop (resumable per phase); accumulates the training time.

        A mask handed in is ablated first (`shuffle`: new positions per layer; `reinit`: `model`'s
        weights re-drawn in place), seeded by the trial and the phase."""
        if masks is not None and self.ablation.acts_on_masks:
            masks = self._ablate(model, masks, phase)
        result = self.trainer.train(model, phase, settings or self.train_settings, masks=masks, **options)
        self.train_seconds += result.seconds
        return result

    def _ablate(self, model: nn.Module, masks: Masks, phase: str) -> Masks:
        if self.ablation.shuffles_positions:
            masks = shuffle_masks(masks, self.seed("ablation", "shuffle", phase))
        if self.ablation.redraws_weights:
            model.load_state_dict(self.new_model("ablation", "reinit", phase).state_dict())
        self.ablated_phases.append(phase)
        return masks

    def use_stage(self, stage: StageSpec, compute: Callable[[Path], dict[str, Any]], scoring: bool = False
                  ) -> StageResult:
        """The shared stage's result (computed here under its lock if nobody has); its seconds count once
        in this job's runtime, as training time or (`scoring`) as scoring/analysis time."""
        folder = stage.folder(self.results_dir)
        if folder not in self._stage_results:
            result = obtain(self.results_dir, stage, compute)
            self._stage_results[folder] = result
            self.stages[stage.name] = COMPUTED if result.computed_here else LOADED
            if scoring:
                self.scoring_seconds += result.value["seconds"]
            else:
                self.train_seconds += result.value["seconds"]
        return self._stage_results[folder]

    def dense_trajectory(self, snapshots: Iterable[int] = ()) -> Trajectory:
        """The trial's dense run with the job's recipe (`bench.trajectory`), keeping `snapshots` epochs."""
        run = self._trajectory_run(snapshots)
        result = obtain(self.results_dir, trajectory_stage(self.spec, self.train_settings), run.compute)
        self._count_trajectory(result.value["seconds"], result.computed_here)
        return Trajectory(result.value, run)

    def dense_state(self, epoch: int, snapshots: Iterable[int] = ()) -> DenseState:
        """The dense run's state after its first `epoch` epochs, training no more of the run than that where
        it is not done (`TrajectoryRun.prefix`); `snapshots`: other epochs the job will read."""
        run = self._trajectory_run({epoch, *snapshots})
        if epoch == 0:
            return DenseState(state_on_cpu(self.new_model()), None, 0.0)
        if epoch == self.train_settings.epochs:
            trajectory = self.dense_trajectory()
            return DenseState(trajectory.final_state, trajectory.evaluation, trajectory.value["seconds"])
        computed_before = run.snapshot_path(epoch).exists()
        snapshot = run.prefix(epoch)
        self._count_trajectory(snapshot["seconds"], not computed_before)
        return DenseState(snapshot["model"], Evaluation(**snapshot["evaluation"]), snapshot["seconds"])

    def _trajectory_run(self, snapshots: Iterable[int]) -> TrajectoryRun:
        stage = trajectory_stage(self.spec, self.train_settings)
        request(self.results_dir, stage, snapshots)
        return TrajectoryRun(stage.folder(self.results_dir), self.trainer, self.train_settings, self.new_model)

    def _count_trajectory(self, seconds: float, computed_here: bool) -> None:
        """The dense run's seconds count once in this job's training time, up to the furthest epoch it read."""
        self.train_seconds += max(0.0, seconds - self._trajectory_seconds)
        self._trajectory_seconds = max(self._trajectory_seconds, seconds)
        if computed_here or TRAJECTORY_STAGE not in self.stages:
            self.stages[TRAJECTORY_STAGE] = COMPUTED if computed_here else LOADED

    def count_as_scoring(self, seconds: float) -> None:
        """Move `seconds` that a training phase timed (scoring inside its epochs) to scoring time."""
        self.train_seconds -= seconds
        self.scoring_seconds += seconds

    def schedule(self, **changes: Any) -> TrainSettings:
        """The job's recipe with some fields changed (e.g. epochs, lr for fine-tuning)."""
        return replace(self.train_settings, **changes)

    @contextmanager
    def timed_scoring(self):
        """Count the enclosed block as scoring/analysis time (synchronised on CUDA)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.scoring_seconds += time.perf_counter() - started

    def snapshot_path(self, name: str) -> Path:
        return self.job_dir / "ckpt" / f"{name}.snapshot.pt"

    def save_snapshot(self, name: str, value: Any) -> None:
        """Store `value` (tensors, containers, numbers and the method's `snapshot_types`), checksummed."""
        save_checked(self.snapshot_path(name), value)

    def load_snapshot(self, name: str) -> Any:
        """The stored snapshot, or None when it is missing or corrupt (then the method recomputes it)."""
        path = self.snapshot_path(name)
        if not path.exists():
            return None
        try:
            return load_checked(path, map_location=self.device, safe_types=self.method.snapshot_types)
        except CorruptFileError as error:
            path.replace(path.with_name(path.name + ".corrupt"))
            print(f"warning: {error}; set aside as {path.name}.corrupt, recomputing it", file=sys.stderr, flush=True)
            return None

    def record(self, model: nn.Module, masks: Masks | None, evaluation: Evaluation, epochs: int, round: int = 0,
               requested_sparsity: float | None = None, **extra: Any) -> dict[str, Any]:
        """The common record of one round, plus method-specific fields in `extra`."""
        if masks is not None:
            check_binary(masks)
            self.layer_rows.extend({"round": round, **row} for row in layer_table(masks))
        report = sparsity_report(model, masks)
        self.last_recorded = (model, masks)
        if self._layer_macs is None:
            image = (self.model_input.in_channels, self.model_input.image_size, self.model_input.image_size)
            self._layer_macs = layer_macs(model, image)
        dense_macs = pruned_macs(self._layer_macs, None)
        requested = self.sparsity if requested_sparsity is None else requested_sparsity
        return {
            "job_id": self.job_id,
            "method": self.spec.method,
            "dataset": self.spec.dataset,
            "arch": self.spec.arch,
            "trial": self.trial,
            "round": round,
            "requested_sparsity": requested,
            **report.as_record(),
            "flops": pruned_macs(self._layer_macs, masks),
            "dense_flops": dense_macs,
            "accuracy": evaluation.accuracy,
            "top5": evaluation.top5,
            "test_loss": evaluation.loss,
            "epochs": epochs,
            "runtime_s": self.train_seconds + self.scoring_seconds,
            "scoring_s": self.scoring_seconds,
            "device": device_name(self.device),
            "ablation": self.spec.ablation,
            "extra": extra | ({"stages": dict(self.stages)} if self.stages else {}),
        }
