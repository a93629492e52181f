"""The method contract: what a pruning method declares and implements, and nothing of the job runtime.

A method is a `Method` subclass with a `Settings` dataclass, registered by name
(`methods.registry.register`). Its `run(context)` builds models, trains them, scores and masks them
through the `JobContext` (`bench.job_context`: the job runtime, which owns everything jobs share) and
returns one record per round (`context.record(...)`). A `Pruner` makes a mask without training.

What a method needs beyond its own job it *declares*, so that the harness never names a method:
`stage_needs` (the shared stages it reads, with the snapshot epochs it asks them to keep), what it will
train (`planned_phases`, as `PlannedPhase`s), the ablations it takes (`check_ablation`), and for the
"found" sparsity: `provides_found` (the one method whose job records the s* that jobs at "found" take),
`reuses_found_analysis` (methods that retrain from that analysis with their own settings) and
`found_analysis_hparams` (which of a job's settings choose the analysis), read by `bench.found`.
This module imports from `bench/` only what the declarations need at run time (the ablation names,
the error type, masks), so that the method modules the registry scans never import the job runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from bench.ablations import ABLATION_NAMES, ABLATIONS
from bench.errors import BenchError
from bench.masks import Masks

if TYPE_CHECKING:  # annotations only: importing them would close bench.spec -> methods.registry -> here
    from bench.job_context import JobContext
    from bench.spec import JobSpec
    from bench.stages import StageNeed
    from bench.train import TrainSettings


@dataclass(frozen=True)
class NoSettings:
    """A method without settings of its own."""


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

    def job_notes(self, spec: JobSpec, recipe: TrainSettings) -> list[str]:
        """Lines `bench.run` prints before any work about what the method changes for this job (e.g. a
        schedule fitted to a short job); none by default."""
        return []

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
