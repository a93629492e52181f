"""The method contract and the building blocks every method runs through.

A method is a `Method` subclass with a `Settings` dataclass, registered by name
(`methods.registry.register`). Its `run(context)` builds models, trains them, scores and masks them
through the `JobContext` and returns one record per round (`context.record(...)`). The context owns
everything shared: the trial's init (`new_model`), the one training loop (`train`), exact-count
thresholding (`bench.masks`), timers for scoring/analysis time, snapshots in `ckpt/`, the stages
that jobs share (`use_stage`, `dense_trajectory`: `bench.stages`), the common record fields and the
job's sanity ablation (`bench.ablations`: applied where every mask is handed to the training loop,
and around the method's run for `invert`), so that methods differ only in what makes them different.

What a method needs beyond its own job it *declares*, so that the harness never names a method:
`stage_needs` (the shared stages it reads, with the snapshot epochs it asks them to keep), and for the
"found" sparsity: `provides_found` (the one method whose job records the s* that jobs at "found" take),
`reuses_found_analysis` (methods that retrain from that analysis with their own settings) and
`found_analysis_hparams` (which of a job's settings choose the analysis), read by `bench.found`.
"""

from __future__ import annotations

import math
import sys
import time
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from bench.ablations import ABLATION_NAMES, ABLATIONS, NO_ABLATION, shuffle_masks
from bench.atomic import CorruptFileError, load_checked, save_checked
from bench.data import DeviceData
from bench.errors import BenchError
from bench.flops import layer_macs, pruned_macs
from bench.masks import Masks, check_binary, keep_lowest, layer_table, sparsity_report
from bench.models import ModelInput, build_model
from bench.seeds import derive_seed
from bench.spec import JobSpec
from bench.stages import COMPUTED, LOADED, StageNeed, StageResult, StageSpec, obtain, request
from bench.train import Evaluation, PhaseResult, Trainer, TrainSettings
from bench.trajectory import TRAJECTORY_STAGE, Trajectory, TrajectoryRun, state_on_cpu, trajectory_stage

SPARSITY_TOLERANCE = 0.005
RECORD_FIELDS = (
    "job_id", "method", "dataset", "arch", "trial", "round", "requested_sparsity", "achieved_sparsity",
    "density", "compression", "prunable_weights", "kept_weights", "total_parameters", "flops", "dense_flops", "accuracy", "top5",
    "test_loss", "epochs", "runtime_s", "scoring_s", "device", "ablation",
)


@dataclass(frozen=True)
class NoSettings:
    """A method without settings of its own."""


def build_settings(settings_class: type, overrides: dict[str, Any], owner: str) -> Any:
    """`settings_class(**overrides)` with a one-line error for unknown names, wrong types, non-finite
    numbers and numbers outside their field's `minimum`/`maximum` (metadata; integers >= 0 where unset)."""
    known = {item.name: item for item in fields(settings_class)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise BenchError(f"unknown setting(s) {unknown} for {owner}; accepted: {sorted(known) or 'none'}")
    hints = typing.get_type_hints(settings_class)
    converted = {name: _convert(value, hints[name], f"{owner} setting {name}") for name, value in overrides.items()}
    for name, value in converted.items():  # bounds of the field's metadata; counts are >= 0 by default
        metadata = known[name].metadata
        minimum, maximum = metadata.get("minimum", 0 if hints[name] is int else None), metadata.get("maximum")
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            if (minimum is not None and item < minimum) or (maximum is not None and item > maximum):
                bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
                raise BenchError(f"{owner} setting {name} = {value!r}; accepted: numbers {bounds}")
    return settings_class(**converted)


def _convert(value: Any, hint: Any, what: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise BenchError(f"{what} = {value!r} is not a boolean; accepted: true, false")
    if hint is int and isinstance(value, bool | float):
        raise BenchError(f"{what} = {value!r} is not an integer; accepted: a whole number such as {int(value)}")
    if hint in (int, float):
        try:
            number = hint(value)
        except (TypeError, ValueError, OverflowError):
            raise BenchError(f"{what} = {value!r} is not a {hint.__name__}") from None
        if not math.isfinite(number):
            raise BenchError(f"{what} = {value!r} is not finite; accepted: a finite {hint.__name__}")
        return number
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise BenchError(f"{what} = {value!r} is not a list; accepted: a list such as [{value!r}]")
        arguments = typing.get_args(hint)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_convert(item, arguments[0], what) for item in value)
        return tuple(value)
    return value


@dataclass(frozen=True)
class PlannedPhase:
    """Work a job will do, as `--dry-run`'s cost counts it: epochs trained and test passes. Phases with the
    same `stage` (work several jobs share, computed once) count once in a grid."""

    epochs: int
    evaluations: int
    stage: str | None = None

    @classmethod
    def training(cls, settings: TrainSettings, start_epoch: int = 0, stage: str | None = None) -> PlannedPhase:
        """A phase of the shared loop over epochs [start_epoch, settings.epochs) of `settings`."""
        return cls(max(0, settings.epochs - start_epoch), settings.evaluations(start_epoch), stage)


def planned_trajectory(spec: JobSpec, recipe: TrainSettings) -> PlannedPhase:
    """The dense trajectory (`bench.trajectory`) as the cost counts it: once per stage."""
    return PlannedPhase.training(recipe, stage=trajectory_stage(spec, recipe).label)


class Method(ABC):
    """A pruning method: its settings, what kind of sparsity it takes, and how it runs a job."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings
    version: ClassVar[int] = 1
    """The method's code version: bump it when a change of the code changes its results (as a stage's
    version). It is part of the job id where it is not 1 (so version 1 keeps the ids jobs had before
    methods had versions), so a job done under another version is run again; `provenance.json` records
    it with a hash of the method's source (`bench.method_identity`)."""
    sparsity_mode: ClassVar[str] = "levels"
    """How a grid gives the method sparsities (`methods.registry.SPARSITY_MODES`): "levels" (one job per requested
    sparsity), "rounds" (one iterative job whose rounds cover the levels: it gets the largest), "none"
    (one job: dense, a method that finds its own sparsity). A grid's `[modes]` may override it."""
    takes_sparsity: ClassVar[bool] = True
    """False for methods that run at no requested sparsity (dense)."""
    finds_sparsity: ClassVar[bool] = False
    """True for methods that find their own sparsity (IMC, Continuous Sparsification): no tolerance check."""
    quick_hparams: ClassVar[dict[str, Any]] = {}
    """Settings that make a smoke run cheap (the contract test and the offline default grid use them)."""
    provides_found: ClassVar[bool] = False
    """True for the one method whose job records the s* (`extra.found_sparsity`) that jobs at sparsity
    "found" take and wait for (IMC's analysis)."""
    reuses_found_analysis: ClassVar[bool] = False
    """True for methods that retrain from the found-sparsity analysis run with their own settings (IMC's
    variants): a grid's "found" jobs take the analysis of its first such method."""
    needs_analysis: ClassVar[bool] = False
    """True: every job of the method waits for its found-sparsity analysis job (grids can also say so)."""
    may_empty_layers: ClassVar[bool] = False
    """True for methods whose masks may prune a whole layer (layer collapse of global scores at high
    sparsity, Tanaka et al. 2020); `bench.check` fails a method that empties a layer unless it says so."""
    ablations: ClassVar[tuple[str, ...]] = ABLATION_NAMES
    """The sanity ablations the method takes (`bench.ablations`); "none" only for methods without a mask."""
    snapshot_types: ClassVar[tuple[type, ...]] = ()
    """Classes besides tensors, containers and numbers that the method's snapshots hold (allow-listed
    for the `weights_only` load; nothing else in a snapshot file is ever constructed)."""

    def __init__(self, settings: Any):
        self.settings = settings

    @staticmethod
    def found_analysis_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
        """The part of a job's settings that the found-sparsity analysis it reuses depends on."""
        return dict(hparams)

    def stage_needs(self, spec: JobSpec, recipe: TrainSettings) -> list[StageNeed]:
        """The shared stages a job of `spec` reads (executors ask for their snapshots up front)."""
        return []

    def check_job(self, spec: JobSpec, recipe: TrainSettings) -> None:
        """Raise a one-line `BenchError` for a job whose settings can only fail (or fall short of what it
        asks for) once it runs; `bench.run` calls it for every job before any work. None by default."""
        return None

    @abstractmethod
    def run(self, context: JobContext) -> list[dict[str, Any]]:
        """Run the job; return one record per round, each made by `context.record`."""

    def planned_phases(self, spec: JobSpec, train_settings: TrainSettings, sparsity: float | None
                       ) -> list[PlannedPhase] | None:
        """What `run` will train and evaluate for `spec` at `sparsity` (None: the job asks for none, or for a
        sparsity found at run time), without running it; None if that depends on something known only then.
        Default: one phase of the recipe."""
        return [PlannedPhase.training(train_settings)]


class Pruner(ABC):
    """A method that makes a mask without training: what `bench.api.prune` runs in a user's own loop.

    `prune` sees only the model, the labelled batches (already on the model's device), the sparsity, a
    seed and the input shape (C, H, W), so the same code serves a job and any `nn.Module`."""

    needs_batches: ClassVar[bool] = False
    """True for pruners that score the weights on data (SNIP, GraSP): `prune` without batches is an error."""

    @abstractmethod
    def prune(self, model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], sparsity: float, seed: int,
              input_shape: tuple[int, ...] | None) -> Masks:
        """The mask of `model` at exactly `sparsity`; must not change `model`."""


def check_ablation(method_class: type[Method], ablation: str) -> None:
    """A one-line error unless `method_class` takes `ablation`."""
    ABLATIONS.get(ablation)
    if ablation not in method_class.ablations:
        raise BenchError(f"method {method_class.name} does not take ablation {ablation!r}; accepted: "
                         f"{', '.join(method_class.ablations)}")


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def check_record(record: dict[str, Any], method: Method) -> None:
    """Every field present; sparsity within tolerance unless the method finds its own."""
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        raise ValueError(f"record of {method.name} lacks {missing}")
    requested = record["requested_sparsity"]
    if requested is not None and not method.finds_sparsity:
        gap = abs(record["achieved_sparsity"] - requested)
        if gap > SPARSITY_TOLERANCE:
            raise RuntimeError(
                f"{method.name} reached sparsity {record['achieved_sparsity']:.4f} for requested {requested:.4f} "
                f"(off by {gap:.4f} > {SPARSITY_TOLERANCE})"
            )
