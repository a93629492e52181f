"""The method contract and the building blocks every method runs through.

A method is a `Method` subclass with a `Settings` dataclass, registered by name
(`methods.registry.register`). Its `run(context)` builds models, trains them, scores and masks them
through the `JobContext` and returns one record per round (`context.record(...)`). The context owns
everything shared: the trial's init (`new_model`), the one training loop (`train`), exact-count
thresholding (`bench.masks`), timers for scoring/analysis time, snapshots in `ckpt/`, and the common
record fields, so that methods differ only in what makes them different.
"""

from __future__ import annotations

import time
import typing
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from bench.atomic import torch_save
from bench.data import DeviceData
from bench.errors import BenchError
from bench.flops import layer_macs, pruned_macs
from bench.masks import Masks, check_binary, layer_table, sparsity_report
from bench.models import ModelInput, build_model
from bench.seeds import derive_seed
from bench.spec import JobSpec
from bench.train import Evaluation, PhaseResult, Trainer, TrainSettings

SPARSITY_TOLERANCE = 0.005
RECORD_FIELDS = (
    "job_id", "method", "dataset", "arch", "trial", "round", "requested_sparsity", "achieved_sparsity",
    "density", "compression", "prunable_weights", "kept_weights", "total_parameters", "flops", "dense_flops", "accuracy", "top5",
    "test_loss", "epochs", "runtime_s", "scoring_s", "device",
)


@dataclass(frozen=True)
class NoSettings:
    """A method without settings of its own."""


def build_settings(settings_class: type, overrides: dict[str, Any], owner: str) -> Any:
    """`settings_class(**overrides)` with a one-line error for unknown names and wrong types."""
    known = {item.name: item for item in fields(settings_class)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise BenchError(f"unknown setting(s) {unknown} for {owner}; accepted: {sorted(known) or 'none'}")
    hints = typing.get_type_hints(settings_class)
    converted = {name: _convert(value, hints[name], f"{owner} setting {name}") for name, value in overrides.items()}
    return settings_class(**converted)


def _convert(value: Any, hint: Any, what: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise BenchError(f"{what} = {value!r} is not a boolean; accepted: true, false")
    if hint in (int, float):
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise BenchError(f"{what} = {value!r} is not a {hint.__name__}") from None
    if origin is tuple:
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


class Method(ABC):
    """A pruning method: its settings, what kind of sparsity it takes, and how it runs a job."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings
    takes_sparsity: ClassVar[bool] = True
    """False for methods that run at no requested sparsity (dense)."""
    finds_sparsity: ClassVar[bool] = False
    """True for methods that find their own sparsity (IMC, Continuous Sparsification): no tolerance check."""
    quick_hparams: ClassVar[dict[str, Any]] = {}
    """Settings that make a smoke run cheap (the contract test and the offline default grid use them)."""

    def __init__(self, settings: Any):
        self.settings = settings

    @abstractmethod
    def run(self, context: JobContext) -> list[dict[str, Any]]:
        """Run the job; return one record per round, each made by `context.record`."""

    def planned_phases(self, spec: JobSpec, train_settings: TrainSettings, sparsity: float | None
                       ) -> list[PlannedPhase] | None:
        """What `run` will train and evaluate for `spec` at `sparsity` (None: the job asks for none, or for a
        sparsity found at run time), without running it; None if that depends on something known only then.
        Default: one phase of the recipe."""
        return [PlannedPhase.training(train_settings)]


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

    def train(self, model: nn.Module, phase: str, masks: Masks | None = None, settings: TrainSettings | None = None,
              **options: Any) -> PhaseResult:
        """Train through the shared loop (resumable per phase); accumulates the training time."""
        result = self.trainer.train(model, phase, settings or self.train_settings, masks=masks, **options)
        self.train_seconds += result.seconds
        return result

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
        torch_save(self.snapshot_path(name), value)

    def load_snapshot(self, name: str) -> Any:
        path = self.snapshot_path(name)
        return torch.load(path, map_location=self.device, weights_only=False) if path.exists() else None

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
            "extra": extra,
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
