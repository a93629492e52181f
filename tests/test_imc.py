"""IMC's pipeline (`methods/imc.py`): one shared analysis, the variants' starting weights, masks, the
found-sparsity interface and the Lipschitz sweep, on 300 digits with ResNet-8."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.atomic import load_checked
from bench.errors import BenchError
from bench.found import analysis_spec, found_sparsity
from bench.job_context import JobContext
from bench.jobs import make_context, run_job
from bench.spec import FOUND, JobSpec, RunSettings
from bench.store import DONE, job_dir, read_metrics, write_spec
from methods import imc

DATASET, ARCH = "digits@300", "resnet8"
TRAIN = {"epochs": 3}
HPARAMS = imc.QUICK_HPARAMS | {"pretrain_epochs": 2, "rewind_epoch": 1}


def spec_of(method: str, sparsity=None, **hparams) -> JobSpec:
    return JobSpec(method=method, dataset=DATASET, arch=ARCH, sparsity=sparsity, train=TRAIN,
                   hparams=HPARAMS | hparams)


def run(results: Path, spec: JobSpec) -> dict:
    status = run_job(write_spec(results, spec, RunSettings(device="cpu", progress=False)))
    assert status["state"] == DONE, status.get("traceback")
    return read_metrics(job_dir(results, spec))[0]


def context_for(results: Path, spec: JobSpec) -> JobContext:
    """The context a job of `spec` gets, for looking at a method's inputs."""
    return make_context(spec, RunSettings(device="cpu", progress=False), job_dir(results, spec), results)


@pytest.fixture(scope="module")
def shared_results(tmp_path_factory) -> Path:
    """One results folder for the tests that may share IMC's cached pretraining and analysis."""
    return tmp_path_factory.mktemp("imc-results")


def analyses_on_disk(results: Path) -> int:
    """How many spectrum analyses the results folder holds (each computed once, in its stage folder)."""
    return len(list((results / "stages").glob("imc-analysis-*")))


def same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(value, state[name]) for name, value in model.state_dict().items())


def test_variants_share_one_analysis_and_start_from_their_weights(tmp_path):
    records = {name: run(tmp_path, spec_of(name, sparsity=0.5)) for name in ("imc-reinit", "imc-rewind", "imc-finetune")}
    assert analyses_on_disk(tmp_path) == 1
    computed = [record["extra"]["computed_here"]["analysis"] for record in records.values()]
    assert computed == [True, False, False]
    assert len({record["extra"]["cache"]["analysis"] for record in records.values()}) == 1
    for record in records.values():
        # a requested sparsity (the report's "paper" source) is pruned exactly; s* is still recorded
        assert record["achieved_sparsity"] == pytest.approx(0.5, abs=1e-4)
        assert record["epochs"] == HPARAMS["pretrain_epochs"] + TRAIN["epochs"]
        assert record["runtime_s"] >= record["extra"]["pretrain_s"] + record["extra"]["analysis_s"]
        assert "found_sparsity_mass" in record["extra"] and "found_sparsity_nodes" in record["extra"]

    starts = {}
    for name in records:
        context = context_for(tmp_path, spec_of(name, sparsity=0.5))
        analysis = imc.IMCAnalysis(context, context.method.settings)
        starts[name] = context.method.start(context, analysis)
    pretrained = analysis.pretrained
    theta_0 = context.new_model().state_dict()
    fresh = context.new_model("reinit").state_dict()
    reinit, rewind, finetune = (starts[name][0] for name in records)
    assert same_weights(reinit, fresh) and not same_weights(reinit, theta_0)
    assert same_weights(rewind, analysis.theta_R) and not same_weights(rewind, pretrained["theta_P"])
    assert not same_weights(rewind, theta_0)  # theta_R is after rewind_epoch = 1 epoch of training
    assert same_weights(finetune, pretrained["theta_P"])
    assert starts["imc-finetune"][1].lr == pytest.approx(0.1 * context.train_settings.lr)
    assert starts["imc-rewind"][1] == context.train_settings

    masks = analysis.masks
    for name in records:  # the retrained weights are masked by the shared IMC mask
        retrained = load_checked(job_dir(tmp_path, spec_of(name, sparsity=0.5)) / "ckpt" / "retrain.pt")
        for layer, mask in masks.items():
            assert torch.equal(retrained["masks"][layer], mask)
            assert not retrained["model"][layer][mask == 0].any()


def test_analysis_job_found_sparsity_and_no_gap(shared_results):
    tmp_path = shared_results
    found_spec = JobSpec(method="magnitude", dataset=DATASET, arch=ARCH, sparsity=FOUND, train=TRAIN)
    with pytest.raises(BenchError, match="imc-analysis"):
        found_sparsity(found_spec, tmp_path, HPARAMS)
    analysis = analysis_spec(found_spec, HPARAMS)
    record = run(tmp_path, analysis)
    extra = record["extra"]
    assert found_sparsity(found_spec, tmp_path, HPARAMS) == extra["found_sparsity"]
    assert record["achieved_sparsity"] == pytest.approx(extra["found_sparsity"], abs=1e-4)
    assert record["epochs"] == HPARAMS["pretrain_epochs"]
    # the default rule: the exact count of converged Ritz values above the gap, or mass where it cannot decide
    split = extra["split"]
    assert extra["found_sparsity"] == split["sparsity"] == extra["found_sparsity_count"]
    assert extra["found_rule"] == split["decided_by"] in ("count", "mass", "no gap")
    if extra["found_rule"] == "count":
        assert extra["found_sparsity"] == extra["found_count"] / extra["hessian_dimension"]
    elif split["index"] is not None:
        assert extra["found_sparsity"] == extra["found_sparsity_mass"] and extra["found_count"] is None
    assert 2 <= extra["slq_runs_used"] <= HPARAMS["slq_runs"]
    assert len(extra["spectrum_nodes"]) == extra["slq_runs_used"] * HPARAMS["lanczos_steps"]
    assert extra["hvps"]["slq"] == len(extra["spectrum_nodes"])
    assert sum(extra["spectrum_weights"]) == pytest.approx(1.0)
    assert extra["top_eigenvalues_source"] in ("ritz", "power") and len(extra["top_eigenvalues"]) == 2
    estimate = extra["lipschitz_estimate"]
    assert estimate["p"] == 2.0 and estimate["delta"] == 0.01 and estimate["value"] == extra["lipschitz"] > 0
    # K with what it measures: one HVP for the float32 rounding probe, one per secant pair, 2 x 5 x 2 for
    # ||H(W+U) - H(W)||; in float32 unless its rounding would blur the secants
    share = estimate["float32_rounding_share"]
    assert estimate["dtype"] == ("torch.float64" if share > 0.01 else "torch.float32")
    assert extra["hvps"]["lipschitz"] == 1 + 2 + 2 * 5 * 2
    assert extra["lipschitz_hessian_change"] == estimate["hessian_change"] > 0
    assert 0.0 <= extra["lipschitz_relu_flip_share"] == estimate["relu_flip_share"] < 1.0
    assert len(estimate["relu_flip_shares"]) == HPARAMS["lipschitz_samples"]

    # an absurd K: no admissible gap is s* = 0, recorded, not an error (an analysis of its own: SLQ's
    # early stop asks the gap rule at that K; without the early stop it is the same analysis)
    before = analyses_on_disk(tmp_path)
    no_gap = run(tmp_path, spec_of("imc-analysis", lipschitz_override=1e9))
    assert analyses_on_disk(tmp_path) == before + 1 and no_gap["extra"]["slq_runs_used"] == 2
    assert no_gap["extra"]["found_sparsity"] == 0.0 and no_gap["achieved_sparsity"] == 0.0
    assert no_gap["extra"]["spectral_gap"] == "no spectral gap"

    # the Lipschitz sweep repeats the analysis' K at (p=2, Delta=0.01) and covers the grid of (p, Delta)
    sweep = run(tmp_path, spec_of("imc-lipschitz", lipschitz_sweep_p=(2.0, 5.0), lipschitz_sweep_delta=(0.01, 0.1)))
    table = sweep["extra"]["lipschitz_sweep"]
    assert [(row["p"], row["delta"]) for row in table] == [(2.0, 0.01), (2.0, 0.1), (5.0, 0.01), (5.0, 0.1)]
    assert table[0]["value"] == pytest.approx(estimate["value"], rel=1e-5)
    assert all(row["hessian_change"] > 0 and row["relu_flip_share"] is not None for row in table)

    # today's budget before the exact count (for timing old against new): all runs, power iteration, float32
    legacy = run(tmp_path, spec_of("imc-analysis", **imc.LEGACY_ANALYSIS_HPARAMS))["extra"]
    assert analyses_on_disk(tmp_path) == before + 2
    assert legacy["slq_runs_used"] == HPARAMS["slq_runs"] and legacy["top_eigenvalues_source"] == "power"
    assert legacy["lipschitz_estimate"]["dtype"] == "torch.float32"


def test_analysis_cache_key_carries_the_analysis_version(tmp_path):
    context = context_for(tmp_path, spec_of("imc-analysis"))
    analysis = imc.IMCAnalysis(context, context.method.settings)
    assert analysis.keys[imc.ANALYSIS]["analysis_version"] == imc.ANALYSIS_VERSION == 3
    assert analysis.keys[imc.SELECTION]["analysis_version"] == imc.ANALYSIS_VERSION


def test_slow_manifold_prunes_the_fast_subspace_energy(shared_results):
    tmp_path = shared_results
    spec = spec_of("imc-analysis", sparsity=0.3, select="slow-manifold")
    record = run(tmp_path, spec)
    assert record["achieved_sparsity"] == pytest.approx(0.3, abs=1e-4) and record["extra"]["eigvecs_used"] >= 1
    context = context_for(tmp_path, spec)
    analysis = imc.IMCAnalysis(context, context.method.settings)
    model = analysis.model_at(analysis.pretrained["theta_P"])
    scores, _ = analysis._fast_energy(model, 0.3, analysis.selection["splits"]["mass"]["threshold"])
    energy = -torch.cat([score.reshape(-1) for score in scores.values()])
    kept = torch.cat([mask.reshape(-1) for mask in analysis.masks.values()]).bool()
    assert energy[~kept].min() >= energy[kept].max()  # every pruned weight has at least the kept energy
    assert energy[~kept].max() > 0


def test_settings_are_checked():
    for bad in ({"spectrum_count": "weights"}, {"select": "random"}, {"rewind_epoch": 11}, {"max_sparsity": 1.0},
                {"top_eigenvalues_from": "lanczos"}, {"lipschitz_dtype": "float16"}, {"hessian_change_iterations": -1}):
        with pytest.raises(BenchError, match="accepted"):
            imc.IMCSettings(**bad)


def test_variants_wait_for_the_analysis_with_their_own_settings():
    variant = spec_of("imc-finetune", finetune_lr_scale=0.2)
    assert analysis_spec(variant).hparams == HPARAMS  # the retraining-only setting is dropped
    assert analysis_spec(variant) == analysis_spec(spec_of("imc-reinit"))
    other = JobSpec(method="magnitude", dataset=DATASET, arch=ARCH, sparsity=FOUND, hparams={"finetune_lr_scale": 0.5})
    assert analysis_spec(other).hparams == {}  # other methods: IMC's defaults unless hparams are given


CHANGED_SETTINGS = {
    "pretrain_epochs": 8, "rewind_epoch": 3, "hessian_batch_size": 64, "hessian_batches": 2, "slq_runs": 4,
    "slq_early_stop": False, "lanczos_steps": 50, "top_eigenvalues": 3, "top_eigenvalues_from": "power",
    "power_iterations": 50, "power_tolerance": 1e-4, "lipschitz_p": 5.0, "lipschitz_delta": 0.1,
    "lipschitz_samples": 8, "lipschitz_dtype": "float64", "hessian_change_iterations": 2, "lipschitz_override": 1.0,
    "spectrum_count": "mass", "gap_resolution": 0.02, "max_sparsity": 0.9, "select": "slow-manifold",
    "max_eigvecs": 32, "finetune_lr_scale": 0.5, "lipschitz_sweep_p": (2.0,), "lipschitz_sweep_delta": (0.01,),
}
KEYED_STAGES = (imc.PRETRAIN, imc.SAMPLE, imc.ANALYSIS, imc.SELECTION, imc.SWEEP)


def stages_below(named: set[str]) -> set[str]:
    """The keyed stages whose key holds a named stage's key (the stage itself and those below it)."""
    def lineage(stage: str) -> set[str]:
        parent = imc.STAGE_PARENTS.get(stage)
        return {stage} | (lineage(parent) if parent else set())

    named = {imc.ANALYSIS if stage == imc.EARLY_STOP else stage for stage in named}  # at slq_early_stop = True
    return {stage for stage in KEYED_STAGES if lineage(stage) & named}


def test_every_imc_setting_keys_exactly_the_stages_its_metadata_names():
    """Each setting names the stages it changes (field metadata); changing it changes those stage keys and
    the keys below them, no other; what the analysis job depends on follows the same names."""
    from dataclasses import fields, replace

    from bench.train import TrainSettings

    spec, recipe = spec_of("imc-analysis"), TrainSettings(epochs=12)
    base = imc.IMCSettings(rewind_epoch=5)
    assert set(CHANGED_SETTINGS) == {item.name for item in fields(imc.IMCSettings)}, "a setting without a test value"
    keys = imc.stage_keys(spec, recipe, base, 0.5)
    for item in fields(imc.IMCSettings):
        named = set(item.metadata["stages"])
        assert named and named <= set(imc.STAGES), f"{item.name} names no known stage: {named}"
        changed = replace(base, **{item.name: CHANGED_SETTINGS[item.name]})
        assert changed != base
        new_keys = imc.stage_keys(spec, recipe, changed, 0.5)
        assert {stage for stage in KEYED_STAGES if new_keys[stage] != keys[stage]} == stages_below(named), item.name
        requests = imc.pretraining_need(spec, recipe, changed).requests
        assert (requests != imc.pretraining_need(spec, recipe, base).requests) == (imc.SNAPSHOTS in named), item.name
        in_analysis_job = item.name in imc.analysis_hparams({item.name: CHANGED_SETTINGS[item.name]})
        assert in_analysis_job == bool(named & set(imc.ANALYSIS_JOB_STAGES)), item.name
