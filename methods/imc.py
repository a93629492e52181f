"""IMC, the paper's method: prune at the spectral gap that gives the smallest inertial manifold.

Follows `../shared/specs/imc.md` (binding), read from the supplement of the IMC paper (NeurIPS 2021,
`../shared/paper/imc-supplementary.txt`: Theorem 5, A.4, A.5, Tables 14-16); there is no official
code. Pipeline, per (dataset, arch, trial, recipe, IMC settings):

1. pretrain the dense network from the trial's init theta_0 for `pretrain_epochs` epochs of the
   recipe's schedule: these are the first epochs of the trial's dense run (`bench.trajectory`: the
   same init, batches and lr, the lr drops where the full run has them), so theta_R (after
   `rewind_epoch` epochs) and theta_P (after `pretrain_epochs`) are that run's states, trained once
   for the dense job, magnitude, the LTH variants and every IMC job of the trial and recipe;
2. at theta_P: the Hessian spectrum over the prunable weights by stochastic Lanczos quadrature on
   PyHessian's Hessian-vector products (runs until the split and s* of step 3 are stable, K first),
   the top eigenvalues (the largest converged Ritz values; PyHessian's power iteration where they do
   not suffice), and the secant estimate of the Lipschitz constant K(p, Delta) of
   F(U) = -grad L(W+U) + grad L(W) + H U, in float64 where float32 rounding would blur it, with what it measures: ||H(W+U) - H(W)|| and
   the share of ReLU units that flip sign between W and W+U (`methods.spectrum`);
3. the gap rule: s* = the largest fraction of the spectrum above an admissible gap (gap > 4K, gap
   resolved by SLQ, lower side >= 0, fraction <= max_sparsity); the fraction is k / d with k the
   converged Ritz values above the gap (`spectrum_count = count`; `mass` where they have not
   converged), or one of the recorded readings `mass` and `nodes`; no admissible gap gives s* = 0;
4. the mask at s*: global magnitude of theta_P, or the coordinates with most energy in the fast
   subspace (`select = slow-manifold`);
5. retraining, one registered method per variant: `imc-reinit` (fresh init), `imc-rewind`
   (theta_R), `imc-finetune` (theta_P, lr scaled by `finetune_lr_scale`), all masked.

Steps 2 and 3-4 are shared stages (`<results>/stages/imc-*/`, `bench.stages`: atomic, keyed by a
hash of what determines them and `STAGE_VERSION`, computed once under a lock file; `rewind_epoch` is
in no key, since only imc-rewind's start depends on it), and step 1 is the dense trajectory, so the variants,
`imc-analysis` (steps 1-4 only: the job that "found" sparsities of other methods wait for) and
`imc-lipschitz` (the K sweep over p and Delta of Tables 14-15, no retraining) share the work. A job's
runtime includes the stored seconds of the stages it used, whether it computed them or not.

Where the paper is silent (named settings below, defaults as the spec says): the number and size of
Hessian batches (one fixed, unaugmented sample of `hessian_batches` x `hessian_batch_size` training
images; with BN in eval mode the Hessian of the mean loss over the concatenated sample equals the
average of the per-batch Hessians, so it is one PyHessian batch), SLQ runs and steps and their early
stop, where the top eigenvalues come from, the power iteration's budget (`power_iterations`,
`power_tolerance`: PyHessian's own defaults), the Lipschitz sample count, its dtype and the power
iterations of its Hessian-change diagnostic, `gap_resolution`, `max_sparsity`, `spectrum_count`,
`select`, `max_eigvecs`, `finetune_lr_scale` and `lipschitz_override`. Settings that reproduce the
analysis' Hessian-vector-product budget before these choices (8 SLQ runs, power iteration, K in float32):
`LEGACY_ANALYSIS_HPARAMS`. Seeds come from the trial (`JobContext.seed`). When a
job is given a requested sparsity (the report's `paper` source), IMC prunes at that sparsity with its
own mask and still records the s* it found.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import BenchError
from bench.job_context import JobContext
from bench.masks import Masks, apply_masks, global_mask, magnitude_scores, masks_to, ones_masks
from bench.spec import JobSpec
from bench.stages import StageNeed, StageResult, StageSpec, recipe_key
from bench.train import Evaluation, TrainSettings, evaluate
from bench.trajectory import trajectory_need, trajectory_stage
from methods.base import Method, PlannedPhase
from methods.registry import register
from methods.spectrum import (
    SECANT_DTYPES,
    SPECTRUM_COUNTS,
    GapRule,
    HessianOperator,
    LipschitzEstimate,
    SecantOperators,
    Spectrum,
    Split,
    choose_split,
    prunable_hessian,
    slq,
)

STAGE_VERSION = 2
"""Bump when a stage's computation (spectrum, K, gap rule, mask) changes. 2: theta_P is the dense
trajectory's state, `rewind_epoch` in no key."""
SELECTIONS = ("magnitude", "slow-manifold")
TOP_EIGENVALUE_SOURCES = ("ritz", "power")
ANALYSIS_VERSION = 3
"""Part of the analysis and sweep cache keys: 2 = early-stopped SLQ with residual bounds, Ritz top
eigenvalues, K with its diagnostics, in float64 where needed; 3 = K first, SLQ stopped once the split
and s* are settled (older analyses are not reused)."""


PRETRAIN, SNAPSHOTS, SAMPLE, ANALYSIS, EARLY_STOP, SELECTION, SWEEP, RETRAIN = (
    "pretrain", "snapshots", "sample", "analysis", "analysis-early-stop", "selection", "lipschitz-sweep", "retrain")
STAGES = (PRETRAIN, SNAPSHOTS, SAMPLE, ANALYSIS, EARLY_STOP, SELECTION, SWEEP, RETRAIN)
"""What a setting can change, named in its field metadata (`"stages"`), from which every stage key is built:
the cached stages `pretrain` (theta_P's place on the dense trajectory), `sample` (the Hessian batch),
`analysis` (spectrum, K), `selection` (gap rule and mask at s*) and `lipschitz-sweep`; `analysis-early-stop`:
the analysis while `slq_early_stop` (its early stop asks the gap rule); `snapshots`: the dense trajectory
states the analysis job asks it to keep (theta_R, theta_P); `retrain`: what only the variants' retraining
reads. A key holds its parent's (`STAGE_PARENTS`), so a setting changes its stages and those below them."""
STAGE_PARENTS = {SAMPLE: PRETRAIN, ANALYSIS: SAMPLE, EARLY_STOP: ANALYSIS, SELECTION: ANALYSIS, SWEEP: SAMPLE}
ANALYSIS_JOB_STAGES = (PRETRAIN, SNAPSHOTS, SAMPLE, ANALYSIS, EARLY_STOP, SELECTION)
"""The settings of these are the analysis job's (`analysis_hparams`): a found-sparsity job's s* depends on them."""


@dataclass(frozen=True)
class IMCSettings:
    """IMC's settings (spec `imc.md`); Table 16 gives p, Delta, pretraining, rewinding, Hessian batch."""

    pretrain_epochs: int = field(default=10, metadata={
        "stages": (PRETRAIN, SNAPSHOTS), "help": "epochs of dense pretraining before the analysis"})
    rewind_epoch: int = field(default=10, metadata={
        "stages": (SNAPSHOTS, RETRAIN), "help": "theta_R = weights after this many epochs (imc-rewind)"})
    hessian_batch_size: int = field(default=128, metadata={"stages": (SAMPLE,), "help": "images per Hessian batch"})
    hessian_batches: int = field(default=1, metadata={
        "stages": (SAMPLE,), "help": "fixed Hessian batches (pooled into one sample)"})
    slq_runs: int = field(default=8, metadata={"stages": (ANALYSIS,), "help": "most SLQ runs (random start vectors)"})
    slq_early_stop: bool = field(default=True, metadata={
        "stages": (ANALYSIS,),
        "help": "stop SLQ once two consecutive pooled runs give the same split and s* under the gap rule at "
                "the analysis' K (false: all runs)"})
    lanczos_steps: int = field(default=100, metadata={"stages": (ANALYSIS,), "help": "Lanczos steps per SLQ run"})
    top_eigenvalues: int = field(default=5, metadata={
        "stages": (ANALYSIS,), "help": "top Hessian eigenvalues recorded (diagnostic)"})
    top_eigenvalues_from: str = field(default="ritz", metadata={
        "stages": (ANALYSIS,),
        "help": "ritz (SLQ's converged Ritz values; power iteration if too few converged) or power (PyHessian)"})
    power_iterations: int = field(default=100, metadata={
        "stages": (ANALYSIS,), "help": "PyHessian power-iteration budget per eigenvalue"})
    power_tolerance: float = field(default=1e-3, metadata={
        "stages": (ANALYSIS,), "help": "PyHessian power-iteration relative tolerance"})
    lipschitz_p: float = field(default=2.0, metadata={"stages": (ANALYSIS,), "help": "p of the p-norm in K(p, Delta)"})
    lipschitz_delta: float = field(default=0.01, metadata={
        "stages": (ANALYSIS,), "help": "radius Delta of the perturbations U"})
    lipschitz_samples: int = field(default=16, metadata={
        "stages": (ANALYSIS, SWEEP), "help": "random pairs (U_a, U_b) of the secant estimate"})
    lipschitz_dtype: str = field(default="auto", metadata={
        "stages": (ANALYSIS, SWEEP),
        "help": "dtype of the secants: auto (the model's, float64 where its rounding would exceed 1% of a "
                "secant), float64, or float32 (K at small Delta inflated by rounding)"})
    hessian_change_iterations: int = field(default=5, metadata={
        "stages": (ANALYSIS, SWEEP),
        "help": "power iterations on H(W+U) - H(W) at the pair that gives K (0: not measured)"})
    lipschitz_override: float | None = field(default=None, metadata={
        "stages": (EARLY_STOP, SELECTION), "help": "use this K instead of the estimate (e.g. the paper's 6.17e-12)"})
    spectrum_count: str = field(default="count", metadata={
        "stages": (EARLY_STOP, SELECTION),
        "help": "fraction of the spectrum: count (converged Ritz values above the gap / d; mass where not "
                "converged), mass (SLQ weights) or nodes (share of nodes)"})
    gap_resolution: float = field(default=0.01, metadata={
        "stages": (EARLY_STOP, SELECTION), "help": "a gap must exceed this x (mu_max - mu_min) to count as resolved"})
    max_sparsity: float = field(default=0.95, metadata={
        "stages": (EARLY_STOP, SELECTION), "help": "largest admissible fraction above a split"})
    select: str = field(default="magnitude", metadata={
        "stages": (SELECTION,), "help": "mask at s*: magnitude or slow-manifold"})
    max_eigvecs: int = field(default=64, metadata={
        "stages": (SELECTION,), "help": "cap on the fast-subspace eigenvectors (slow-manifold)"})
    finetune_lr_scale: float = field(default=0.1, metadata={
        "stages": (RETRAIN,), "help": "imc-finetune lr = recipe lr x this"})
    lipschitz_sweep_p: tuple[float, ...] = field(default=(2.0, 5.0, 10.0), metadata={
        "stages": (SWEEP,), "help": "p values of the imc-lipschitz sweep (Table 14)"})
    lipschitz_sweep_delta: tuple[float, ...] = field(default=(0.01, 0.05, 0.1, 0.5, 1.0), metadata={
        "stages": (SWEEP,), "help": "Delta values of the imc-lipschitz sweep (Table 15)"})

    def __post_init__(self) -> None:
        for name in ("pretrain_epochs", "rewind_epoch", "hessian_change_iterations"):
            if getattr(self, name) < 0:
                raise BenchError(f"IMC setting {name} = {getattr(self, name)}; accepted: an integer >= 0")
        for name in ("hessian_batch_size", "hessian_batches", "slq_runs", "lanczos_steps", "top_eigenvalues",
                     "power_iterations", "lipschitz_samples", "max_eigvecs"):
            if getattr(self, name) < 1:
                raise BenchError(f"IMC setting {name} = {getattr(self, name)}; accepted: an integer >= 1")
        if self.rewind_epoch > self.pretrain_epochs:
            raise BenchError(f"IMC setting rewind_epoch = {self.rewind_epoch} exceeds pretrain_epochs = "
                             f"{self.pretrain_epochs}; accepted: 0 <= rewind_epoch <= pretrain_epochs")
        if self.spectrum_count not in SPECTRUM_COUNTS:
            raise BenchError(f"IMC setting spectrum_count = {self.spectrum_count!r}; accepted: "
                             f"{', '.join(SPECTRUM_COUNTS)}")
        if self.top_eigenvalues_from not in TOP_EIGENVALUE_SOURCES:
            raise BenchError(f"IMC setting top_eigenvalues_from = {self.top_eigenvalues_from!r}; accepted: "
                             f"{', '.join(TOP_EIGENVALUE_SOURCES)}")
        if self.lipschitz_dtype not in SECANT_DTYPES:
            raise BenchError(f"IMC setting lipschitz_dtype = {self.lipschitz_dtype!r}; accepted: "
                             f"{', '.join(SECANT_DTYPES)}")
        if self.select not in SELECTIONS:
            raise BenchError(f"IMC setting select = {self.select!r}; accepted: {', '.join(SELECTIONS)}")
        if not 0.0 < self.max_sparsity < 1.0:
            raise BenchError(f"IMC setting max_sparsity = {self.max_sparsity}; accepted: a float in (0, 1)")
        if self.lipschitz_override is not None:
            object.__setattr__(self, "lipschitz_override", float(self.lipschitz_override))
        object.__setattr__(self, "lipschitz_sweep_p", tuple(float(p) for p in self.lipschitz_sweep_p))
        object.__setattr__(self, "lipschitz_sweep_delta", tuple(float(d) for d in self.lipschitz_sweep_delta))

    def subset(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {name: getattr(self, name) for name in names}


def stage_fields(*stages: str) -> tuple[str, ...]:
    """The settings whose field metadata names one of `stages` (in field order)."""
    return tuple(item.name for item in fields(IMCSettings) if set(item.metadata["stages"]) & set(stages))


PRETRAIN_KEYS = stage_fields(PRETRAIN)
SAMPLE_KEYS = stage_fields(SAMPLE)
GAP_RULE_KEYS = stage_fields(EARLY_STOP)
ANALYSIS_KEYS = stage_fields(ANALYSIS)
SELECTION_KEYS = stage_fields(SELECTION)
SWEEP_KEYS = stage_fields(SWEEP)
RETRAIN_KEYS = tuple(name for name in stage_fields(*STAGES) if name not in stage_fields(*ANALYSIS_JOB_STAGES))
"""Settings that do not change the analysis job (pretraining, snapshots, spectrum, K, gap rule, mask)."""


def analysis_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The part of an IMC job's settings that its shared analysis (the `imc-analysis` job) needs."""
    return {key: value for key, value in hparams.items() if key not in RETRAIN_KEYS}


LEGACY_ANALYSIS_HPARAMS: dict[str, Any] = {
    "slq_early_stop": False, "top_eigenvalues_from": "power", "lipschitz_dtype": "float32",
}
"""The analysis' Hessian-vector-product budget before early stopping and Ritz top eigenvalues: all
`slq_runs` (8) runs, PyHessian's power iteration, float32 secants (for timing old against new)."""

QUICK_HPARAMS: dict[str, Any] = {
    "pretrain_epochs": 1, "rewind_epoch": 1, "hessian_batch_size": 32, "slq_runs": 2, "lanczos_steps": 8,
    "top_eigenvalues": 2, "power_iterations": 10, "lipschitz_samples": 2, "max_eigvecs": 4,
}

def split_reading(split: Split) -> tuple[float, str]:
    """What SLQ's early stop compares between runs: s* and the rule that decided it."""
    return split.sparsity, split.decided_by


def leading_epochs(recipe: TrainSettings, epochs: int) -> TrainSettings:
    """The first `epochs` epochs of `recipe`'s schedule: the lr drops stay where the full run has them."""
    if epochs == 0 or recipe.epochs == 0:
        return replace(recipe, epochs=epochs)
    scale = recipe.epochs / epochs
    return replace(recipe, epochs=epochs, lr_drops=tuple(fraction * scale for fraction in recipe.lr_drops))


def pretrain_key(spec: JobSpec, recipe: TrainSettings, settings: IMCSettings) -> dict[str, Any]:
    """What determines theta_P (step 1): the trial's dense trajectory and how far into it."""
    return recipe_key(spec, recipe) | settings.subset(PRETRAIN_KEYS)


def stage_keys(spec: JobSpec, recipe: TrainSettings, settings: IMCSettings, sparsity: float | None
               ) -> dict[str, dict[str, Any]]:
    """The key of every cached stage of a job: its parent's key and the settings that name the stage."""
    keys = {PRETRAIN: pretrain_key(spec, recipe, settings)}
    keys[SAMPLE] = keys[PRETRAIN] | settings.subset(SAMPLE_KEYS)
    analysis_keys = ANALYSIS_KEYS + (GAP_RULE_KEYS if settings.slq_early_stop else ())
    keys[ANALYSIS] = keys[SAMPLE] | settings.subset(analysis_keys) | {"analysis_version": ANALYSIS_VERSION}
    keys[SELECTION] = keys[ANALYSIS] | settings.subset(SELECTION_KEYS) | {"sparsity": sparsity}
    keys[SWEEP] = keys[SAMPLE] | settings.subset(SWEEP_KEYS) | {"analysis_version": ANALYSIS_VERSION}
    return keys


def planned_pretraining(spec: JobSpec, recipe: TrainSettings, settings: IMCSettings) -> PlannedPhase:
    """Step 1 as `--dry-run` counts it: the first epochs of the dense trajectory, counted once with it."""
    return PlannedPhase.training(leading_epochs(recipe, settings.pretrain_epochs),
                                 stage=trajectory_stage(spec, recipe).label)


def pretraining_need(spec: JobSpec, recipe: TrainSettings, settings: IMCSettings) -> StageNeed:
    """Step 1 as a job declares it: the dense trajectory, with snapshots at theta_R and theta_P."""
    if settings.pretrain_epochs > recipe.epochs:
        raise BenchError(f"IMC setting pretrain_epochs = {settings.pretrain_epochs} is past the {recipe.epochs}-"
                         "epoch recipe whose first epochs it is; accepted: 0 .. epochs")
    return trajectory_need(spec, recipe, (settings.rewind_epoch, settings.pretrain_epochs))


class IMCAnalysis:
    """Steps 1-4 for one job: the shared, cached stages and what the job needs from them."""

    def __init__(self, context: JobContext, settings: IMCSettings):
        self.context = context
        self.settings = settings
        self.keys = stage_keys(context.spec, context.train_settings, settings, context.sparsity)
        self.stages: dict[str, StageResult] = {}
        self._pretrained: dict[str, Any] | None = None

    # -- stage helpers ---------------------------------------------------------------------------

    def stage(self, name: str, key: dict[str, Any], compute) -> dict[str, Any]:
        if name not in self.stages:
            # the job's runtime includes the stage's cost whether it computed the stage or loaded it
            self.stages[name] = self.context.use_stage(StageSpec(f"imc-{name}", key, STAGE_VERSION), compute,
                                                       scoring=name != "pretrain")
        return self.stages[name].value

    def model_at(self, state: dict[str, torch.Tensor], *seed_names: object) -> nn.Module:
        model = self.context.new_model(*seed_names)
        model.load_state_dict(state)
        return model

    def hessian_sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        count = self.settings.hessian_batches * self.settings.hessian_batch_size
        return self.context.data.fixed_train_sample(count, self.context.seed("imc", "hessian"))

    def lipschitz(self, operators: SecantOperators, p: float, delta: float) -> LipschitzEstimate:
        """K(p, Delta) at theta_P; the seed depends on (p, Delta) only, so the sweep repeats the analysis' K."""
        return operators.estimate(p, delta, self.settings.lipschitz_samples,
                                  self.context.seed("imc", "lipschitz", p, delta),
                                  self.settings.hessian_change_iterations)

    def secant_operators(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> SecantOperators:
        """The Hessian operators K is estimated on, in `lipschitz_dtype`."""
        return SecantOperators(model, inputs, labels, self.settings.lipschitz_dtype)

    def _timed(self, compute) -> Any:
        started = time.perf_counter()
        value = compute()
        if self.context.device.type == "cuda":
            torch.cuda.synchronize(self.context.device)
        return value, time.perf_counter() - started

    # -- step 1: pretraining ----------------------------------------------------------------------

    @property
    def pretrained(self) -> dict[str, Any]:
        """theta_P (the dense trajectory after `pretrain_epochs`), its evaluation, epochs and seconds."""
        if self._pretrained is None:
            settings = self.settings
            dense = self.context.dense_state(settings.pretrain_epochs, snapshots=(settings.rewind_epoch,))
            evaluation = dense.evaluation or evaluate(self.model_at(dense.state), self.context.data,
                                                      self.context.train_settings.precision)
            self._pretrained = {"theta_P": dense.state, "evaluation": vars(evaluation),
                                "epochs": settings.pretrain_epochs, "seconds": dense.seconds}
        return self._pretrained

    @property
    def theta_R(self) -> dict[str, torch.Tensor]:
        """The dense trajectory after `rewind_epoch` epochs (imc-rewind's start)."""
        return self.context.dense_state(self.settings.rewind_epoch).state

    # -- step 2: spectrum, top eigenvalues, K -----------------------------------------------------

    @property
    def analysis(self) -> dict[str, Any]:
        return self.stage(ANALYSIS, self.keys[ANALYSIS], self._analyse)

    def _analyse(self, folder: Path) -> dict[str, Any]:
        settings, context = self.settings, self.context
        model = self.model_at(self.pretrained["theta_P"])
        inputs, labels = self.hessian_sample()
        seconds: dict[str, float] = {}
        hvps: dict[str, int] = {}
        started = time.perf_counter()
        with self.secant_operators(model, inputs, labels) as operators:  # first: SLQ's early stop needs K
            lipschitz, seconds["lipschitz"] = self._timed(
                lambda: self.lipschitz(operators, settings.lipschitz_p, settings.lipschitz_delta))
            hvps["lipschitz"] = operators.hvps()
        seconds["lipschitz_diagnostics"] = lipschitz.diagnostics_s
        rule = self.gap_rule(lipschitz.value, settings.spectrum_count)
        settled = (lambda pooled: split_reading(choose_split(pooled, rule))) if settings.slq_early_stop else None
        with prunable_hessian(model, inputs, labels) as operator:
            spectrum, seconds["slq"] = self._timed(lambda: slq(
                operator, settings.slq_runs, settings.lanczos_steps, context.seed("imc", "slq"), settled))
            hvps["slq"] = operator.hvps
            top, seconds["top_eigenvalues"] = self._timed(lambda: self._top_eigenvalues(operator, spectrum))
            dimension = operator.dimension
        return {"spectrum": asdict(spectrum), "top_eigenvalues": top["values"],
                "top_eigenvalues_source": top["source"], "lipschitz": asdict(lipschitz),
                "dimension": dimension, "sample_size": int(labels.numel()), "parts_s": seconds, "hvps": hvps,
                "seconds": time.perf_counter() - started}

    def _top_eigenvalues(self, operator: HessianOperator, spectrum: Spectrum) -> dict[str, Any]:
        """The largest converged Ritz values of SLQ, or PyHessian's power iteration (largest |mu|) when
        fewer than `top_eigenvalues` converged or `top_eigenvalues_from = power`."""
        settings = self.settings
        ritz = spectrum.top_ritz(settings.top_eigenvalues) if settings.top_eigenvalues_from == "ritz" else None
        if ritz is not None:
            return {"values": ritz[0], "source": "ritz"}
        values, _ = operator.top_eigenpairs(settings.top_eigenvalues, settings.power_iterations,
                                            settings.power_tolerance, self.context.seed("imc", "eigenvalues"))
        return {"values": values, "source": "power"}

    # -- steps 3-4: gap rule and mask -------------------------------------------------------------

    @property
    def selection(self) -> dict[str, Any]:
        return self.stage(SELECTION, self.keys[SELECTION], self._select)

    def _select(self, folder: Path) -> dict[str, Any]:
        settings, analysis = self.settings, self.analysis
        started = time.perf_counter()
        spectrum = Spectrum(**analysis["spectrum"])
        lipschitz = self.gap_rule(analysis["lipschitz"]["value"], settings.spectrum_count).lipschitz
        splits = {count: choose_split(spectrum, self.gap_rule(lipschitz, count)) for count in SPECTRUM_COUNTS}
        split = splits[settings.spectrum_count]
        sparsity = split.sparsity if self.context.sparsity is None else self.context.sparsity
        model = self.model_at(self.pretrained["theta_P"])
        eigvecs_used = 0
        if sparsity == 0.0:
            masks = ones_masks(model)
        elif settings.select == "magnitude":
            masks = global_mask(magnitude_scores(model), sparsity)
        else:
            energy, eigvecs_used = self._fast_energy(model, sparsity, split.threshold)
            masks = global_mask(energy, sparsity)
        return {"splits": {count: value.as_dict() for count, value in splits.items()}, "lipschitz_used": lipschitz,
                "pruned_sparsity": sparsity, "masks": masks_to(masks, "cpu"), "eigvecs_used": eigvecs_used,
                "seconds": time.perf_counter() - started}

    def gap_rule(self, estimated_lipschitz: float, spectrum_count: str) -> GapRule:
        """The gap rule at K (the estimate, or `lipschitz_override`) with the job's settings."""
        settings = self.settings
        lipschitz = estimated_lipschitz if settings.lipschitz_override is None else settings.lipschitz_override
        return GapRule(lipschitz, settings.gap_resolution, settings.max_sparsity, spectrum_count)

    def _fast_energy(self, model: nn.Module, sparsity: float, threshold: float | None
                     ) -> tuple[dict[str, torch.Tensor], int]:
        """Keep-scores = minus the energy sum_v v_i^2 over the fast eigenvectors (mu above the split).

        The fast subspace has as many dimensions as weights pruned (k = round(s x d)); PyHessian's power
        iteration gives the top min(k, max_eigvecs) eigenvectors (largest |mu|; those at or below the
        split are dropped), so for k > max_eigvecs this is an approximation.
        """
        inputs, labels = self.hessian_sample()
        with prunable_hessian(model, inputs, labels) as operator:
            count = min(max(1, round(sparsity * operator.dimension)), self.settings.max_eigvecs)
            values, vectors = operator.top_eigenpairs(count, self.settings.power_iterations,
                                                      self.settings.power_tolerance,
                                                      self.context.seed("imc", "fast-subspace"))
            floor = 0.0 if threshold is None else threshold
            fast = [vector for value, vector in zip(values, vectors, strict=True) if value > floor]
            energy = torch.zeros(operator.dimension, dtype=operator.dtype, device=operator.device)
            for vector in fast:
                energy += vector**2
            scores = dict(zip(operator.names, operator.unflatten(-energy), strict=True))
        return scores, len(fast)

    # -- what a job uses ----------------------------------------------------------------------------

    @property
    def masks(self) -> Masks:
        return masks_to(self.selection["masks"], self.context.device)

    @property
    def pretrain_epochs(self) -> int:
        return self.pretrained["epochs"]

    def diagnostics(self) -> dict[str, Any]:
        """Everything the spec asks a job to store beyond the common record."""
        analysis, selection = self.analysis, self.selection
        split = selection["splits"][self.settings.spectrum_count]
        estimate = analysis["lipschitz"]
        return {
            "found_sparsity": split["sparsity"],
            "found_count": selection["splits"]["count"]["count"],
            "found_rule": split["decided_by"],
            "found_sparsity_count": selection["splits"]["count"]["sparsity"],
            "found_sparsity_mass": selection["splits"]["mass"]["sparsity"],
            "found_sparsity_nodes": selection["splits"]["nodes"]["sparsity"],
            "spectral_gap": split["reason"],
            "split": split,
            "splits": selection["splits"],
            "lipschitz": selection["lipschitz_used"],
            "lipschitz_estimate": estimate,
            "lipschitz_hessian_change": estimate["hessian_change"],
            "lipschitz_relu_flip_share": estimate["relu_flip_share"],
            "spectrum_nodes": analysis["spectrum"]["nodes"],
            "spectrum_weights": analysis["spectrum"]["weights"],
            "slq_runs_used": analysis["spectrum"]["runs"],
            "top_eigenvalues": analysis["top_eigenvalues"],
            "top_eigenvalues_source": analysis["top_eigenvalues_source"],
            "hvps": analysis["hvps"],
            "hessian_dimension": analysis["dimension"],
            "hessian_sample_size": analysis["sample_size"],
            "pruned_sparsity": selection["pruned_sparsity"],
            "eigvecs_used": selection["eigvecs_used"],
            "analysis_s": analysis["seconds"],
            "analysis_parts_s": analysis["parts_s"],
            "selection_s": selection["seconds"],
            "pretrain_s": self.pretrained["seconds"],
            "pretrain_accuracy": self.pretrained["evaluation"]["accuracy"],
            "computed_here": {name: stage.computed_here for name, stage in self.stages.items()},
            "cache": {name: stage.folder.name for name, stage in self.stages.items()},
            "imc_settings": asdict(self.settings),
        }


class IMCMethod(Method):
    """What every IMC job shares: the settings and step 1, the dense trajectory up to theta_P."""

    Settings = IMCSettings
    finds_sparsity = True
    sparsity_mode = "none"
    """One job per trial: every variant finds s* (at a grid's "paper" level it also prunes there)."""
    quick_hparams = QUICK_HPARAMS

    def stage_needs(self, spec: JobSpec, recipe: TrainSettings) -> list[StageNeed]:
        return [pretraining_need(spec, recipe, self.settings)]


class IMCVariant(IMCMethod):
    """Analyse (shared), then retrain the masked network from the variant's starting weights."""

    takes_sparsity = True
    reuses_found_analysis = True
    found_analysis_hparams = staticmethod(analysis_hparams)
    ablations = ("none", "shuffle", "reinit")
    """`invert` would change the mask inside the cached selection stage that the variants share."""

    def start(self, context: JobContext, imc: IMCAnalysis) -> tuple[nn.Module, TrainSettings]:
        raise NotImplementedError

    def planned_phases(self, spec: JobSpec, train_settings: TrainSettings, sparsity: float | None
                       ) -> list[PlannedPhase]:
        """The shared pretraining, then the retraining: the recipe's epochs for every variant."""
        return [planned_pretraining(spec, train_settings, self.settings), PlannedPhase.training(train_settings)]

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        imc = IMCAnalysis(context, self.settings)
        masks = imc.masks
        model, schedule = self.start(context, imc)
        result = context.train(model, "retrain", masks=masks, settings=schedule)
        return [context.record(model, result.masks, result.evaluation, imc.pretrain_epochs + result.epochs,
                               **imc.diagnostics())]


@register("imc-reinit")
class IMCReinit(IMCVariant):
    """The mask on a fresh random init (seed derived from the trial), the full recipe."""

    def start(self, context: JobContext, imc: IMCAnalysis) -> tuple[nn.Module, TrainSettings]:
        return context.new_model("reinit"), context.train_settings


@register("imc-rewind")
class IMCRewind(IMCVariant):
    """theta_R masked, the original schedule from its start (A.4)."""

    def start(self, context: JobContext, imc: IMCAnalysis) -> tuple[nn.Module, TrainSettings]:
        return imc.model_at(imc.theta_R), context.train_settings


@register("imc-finetune")
class IMCFinetune(IMCVariant):
    """theta_P masked, trained on with the recipe's lr scaled by `finetune_lr_scale`."""

    def start(self, context: JobContext, imc: IMCAnalysis) -> tuple[nn.Module, TrainSettings]:
        schedule = context.schedule(lr=context.train_settings.lr * self.settings.finetune_lr_scale)
        return imc.model_at(imc.pretrained["theta_P"]), schedule


def _planned_pretrained_record(spec: JobSpec, train_settings: TrainSettings, settings: IMCSettings
                               ) -> list[PlannedPhase]:
    """The shared pretraining and the one test pass of `_pretrained_record`."""
    return [planned_pretraining(spec, train_settings, settings), PlannedPhase(epochs=0, evaluations=1)]


def _pretrained_record(context: JobContext, imc: IMCAnalysis, masks: Masks | None, **extra: Any) -> dict[str, Any]:
    """The record of a job that does not retrain: theta_P (masked if `masks`), evaluated as it is."""
    model = imc.model_at(imc.pretrained["theta_P"])
    if masks is not None:
        apply_masks(model, masks)
    evaluation: Evaluation = evaluate(model, context.data, context.train_settings.precision)
    return context.record(model, masks, evaluation, imc.pretrain_epochs, **extra)


@register("imc-analysis")
class IMCAnalysisOnly(IMCMethod):
    """Steps 1-4 only: records s* (theta_P masked at s*, not retrained); 'found' jobs depend on it."""

    takes_sparsity = True  # as the variants: prunes at a requested sparsity if given, else at s*
    provides_found = True
    found_analysis_hparams = staticmethod(analysis_hparams)
    ablations = ("none",)  # records theta_P masked, trains no mask

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        imc = IMCAnalysis(context, self.settings)
        return [_pretrained_record(context, imc, imc.masks, **imc.diagnostics())]

    def planned_phases(self, spec: JobSpec, train_settings: TrainSettings, sparsity: float | None
                       ) -> list[PlannedPhase]:
        return _planned_pretrained_record(spec, train_settings, self.settings)


@register("imc-lipschitz")
class IMCLipschitz(IMCMethod):
    """K(p, Delta) over `lipschitz_sweep_p` x `lipschitz_sweep_delta` at theta_P (Tables 14-15), no retraining."""

    takes_sparsity = False
    quick_hparams = QUICK_HPARAMS | {"lipschitz_sweep_p": (2.0, 5.0), "lipschitz_sweep_delta": (0.01, 0.1)}
    ablations = ("none",)  # no mask

    def planned_phases(self, spec: JobSpec, train_settings: TrainSettings, sparsity: float | None
                       ) -> list[PlannedPhase]:
        return _planned_pretrained_record(spec, train_settings, self.settings)

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        imc = IMCAnalysis(context, self.settings)
        sweep = imc.stage(SWEEP, imc.keys[SWEEP], lambda folder: self._sweep(imc))
        return [_pretrained_record(context, imc, None, lipschitz_sweep=sweep["table"], sweep_s=sweep["seconds"],
                                   pretrain_s=imc.pretrained["seconds"], imc_settings=asdict(self.settings))]

    def _sweep(self, imc: IMCAnalysis) -> dict[str, Any]:
        settings = self.settings
        started = time.perf_counter()
        model = imc.model_at(imc.pretrained["theta_P"])
        inputs, labels = imc.hessian_sample()
        table = []
        with imc.secant_operators(model, inputs, labels) as operators:
            for p in settings.lipschitz_sweep_p:
                for delta in settings.lipschitz_sweep_delta:
                    table.append(asdict(imc.lipschitz(operators, p, delta)))
        return {"table": table, "seconds": time.perf_counter() - started}
