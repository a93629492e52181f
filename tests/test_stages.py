"""Shared stages (`bench.stages`, `bench.trajectory`): computed once under a lock, keyed by what
determines them and a code version, and a job served by a shared stage ends with exactly the numbers
it had when it trained alone (dense, magnitude, LTH round 0, lth-rewind's rewind point, CS's search),
on 300 digits with ResNet-8."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from bench.executors import run_inline
from bench.grid import plan_jobs
from bench.jobs import make_context
from bench.spec import JobSpec, RunSettings
from bench.stages import STAGES_FOLDER, StageSpec, obtain, request
from bench.store import job_dir, read_metrics
from bench.trajectory import TRAJECTORY_STAGE, trajectory_stage
from tests.conftest import TINY_ARCH

DATASET, EPOCHS = "digits@300", 3
RUN = RunSettings(device="cpu", progress=False)
COMPARED = ("round", "requested_sparsity", "achieved_sparsity", "kept_weights", "accuracy", "top5", "test_loss",
            "epochs")


def spec(method: str, sparsity: float | None = None, **hparams) -> JobSpec:
    return JobSpec(method=method, dataset=DATASET, arch=TINY_ARCH, sparsity=sparsity, train={"epochs": EPOCHS},
                   hparams=hparams)


def run_plan(results: Path, specs: list[JobSpec]) -> dict[str, list[dict]]:
    outcome = run_inline(plan_jobs(specs), results, RUN, echo=lambda line: None)
    assert set(outcome.states.values()) == {"done"}, outcome
    return {item.job_id: read_metrics(job_dir(results, item)) for item in specs}


def numbers(records: list[dict]) -> list[dict]:
    return [{name: record[name] for name in COMPARED} for record in records]


def stage_rows(results: Path, name: str) -> list[dict]:
    rows = []
    for path in sorted((results / STAGES_FOLDER).glob(f"{name}-*/epochs.csv")):
        with path.open() as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def test_two_jobs_at_once_compute_a_stage_once(tmp_path):
    calls, results = [], []
    stage = StageSpec("stage", {"k": 1})

    def compute(folder: Path) -> dict:
        calls.append(folder)
        time.sleep(0.3)
        return {"value": torch.arange(3), "seconds": 0.3}

    def job() -> None:
        results.append(obtain(tmp_path, stage, compute))

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(result.computed_here for result in results) == [False, True]
    assert all(torch.equal(result.value["value"], torch.arange(3)) for result in results)
    assert obtain(tmp_path, StageSpec("stage", {"k": 2}), compute).computed_here  # another key, another stage
    assert obtain(tmp_path, StageSpec("stage", {"k": 1}, version=2), compute).computed_here  # a code fix


def test_a_failed_computation_leaves_no_result_and_the_next_job_computes(tmp_path):
    stage = StageSpec("stage", {"k": 1})

    def crash(folder: Path) -> dict:
        (folder / "partial").write_text("resumable work")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        obtain(tmp_path, stage, crash)
    resumed = obtain(tmp_path, stage, lambda folder: {"kept": (folder / "partial").read_text(), "seconds": 1.0})
    assert resumed.computed_here and resumed.value["kept"] == "resumable work"
    with pytest.raises(ValueError, match="seconds"):
        obtain(tmp_path, StageSpec("stage", {"k": 3}), lambda folder: {"value": 1})


def test_requests_do_not_change_the_stage_folder(tmp_path):
    stage = trajectory_stage(spec("dense"), make_context(spec("dense"), RUN, tmp_path / "job", tmp_path).train_settings)
    before = stage.folder(tmp_path)
    request(tmp_path, stage, [2])
    request(tmp_path, stage, [1, 2])
    assert stage.folder(tmp_path) == before and json.loads((before / "requests.json").read_text()) == [1, 2]


def test_shared_dense_trajectory_gives_the_numbers_of_jobs_trained_alone(tmp_path):
    jobs = [spec("dense"), spec("magnitude", 0.5), spec("lth-reinit", 0.5, rounds=1),
            spec("lth-rewind", 0.5, rounds=1, rewind_epoch=1), spec("lth-finetune", 0.5, rounds=1)]
    shared = run_plan(tmp_path / "shared", jobs)
    for index, job in enumerate(jobs):
        alone = run_plan(tmp_path / f"alone{index}", [job])[job.job_id]
        assert numbers(shared[job.job_id]) == numbers(alone), job.method
        assert alone[0]["extra"]["stages"] == {TRAJECTORY_STAGE: "computed"}
        expected = "computed" if index == 0 else "loaded"
        assert all(record["extra"]["stages"] == {TRAJECTORY_STAGE: expected} for record in shared[job.job_id])
        assert all(record["runtime_s"] > 0 for record in shared[job.job_id])  # the stage's seconds count
    # the dense run was trained once for all five jobs, and kept the rewind point it was asked for up front
    assert [(row["phase"], row["epoch"]) for row in stage_rows(tmp_path / "shared", TRAJECTORY_STAGE)] == [
        ("train", str(epoch)) for epoch in range(EPOCHS)]

    # the old way: the job trains the dense run itself, keeping its state after each epoch
    context = make_context(jobs[0], RUN, tmp_path / "solo", tmp_path / "solo-results")
    trainer = context.trainer.sibling(tmp_path / "solo")
    states = {}
    model = context.new_model()
    result = trainer.train(model, "round0", context.train_settings, on_epoch_end=lambda epoch, trained, masks: (
        states.__setitem__(epoch + 1, {key: value.clone() for key, value in trained.state_dict().items()})))
    record = shared[jobs[0].job_id][0]
    assert (record["accuracy"], record["test_loss"]) == (result.evaluation.accuracy, result.evaluation.loss)
    trajectory = make_context(jobs[3], RUN, job_dir(tmp_path / "shared", jobs[3]), tmp_path / "shared"
                              ).dense_trajectory()
    for epoch in (1, 2):  # 1: kept as the run passed it; 2: asked for later, replayed from theta_0
        snapshot = trajectory.state_at(epoch)
        assert all(torch.equal(snapshot[key], value) for key, value in states[epoch].items()), epoch
    assert [row["phase"] for row in stage_rows(tmp_path / "shared", TRAJECTORY_STAGE)][EPOCHS:] == ["replay2"] * 2
    final = trajectory.final_state
    assert all(torch.equal(final[key], value) for key, value in model.state_dict().items())


def test_continuous_sparsification_levels_share_one_search(tmp_path):
    jobs = [spec("continuous-sparsification", None, round_epochs=1), spec("continuous-sparsification", 0.3,
                                                                          round_epochs=1)]
    shared = run_plan(tmp_path / "shared", jobs)
    for index, job in enumerate(jobs):
        alone = run_plan(tmp_path / f"alone{index}", [job])[job.job_id]
        assert numbers(shared[job.job_id]) == numbers(alone)
        assert shared[job.job_id][0]["extra"]["found_sparsity"] == alone[0]["extra"]["found_sparsity"]
        assert shared[job.job_id][0]["extra"]["stages"] == {"cs-search": "loaded" if index else "computed"}
    assert len(list((tmp_path / "shared" / STAGES_FOLDER).glob("cs-search-*/result.pt"))) == 1


IMC_SETTINGS = {"pretrain_epochs": 2, "rewind_epoch": 1}


def test_imc_pretraining_is_the_first_epochs_of_the_dense_trajectory(tmp_path):
    from methods import imc

    imc_jobs = [spec("imc-rewind", 0.5, **imc.QUICK_HPARAMS | IMC_SETTINGS),
                spec("imc-reinit", 0.5, **imc.QUICK_HPARAMS | IMC_SETTINGS)]
    jobs = [*imc_jobs, spec("dense")]  # IMC first: its analysis trains the prefix, the dense job the rest
    shared = run_plan(tmp_path / "shared", jobs)
    for job in jobs:
        alone = run_plan(tmp_path / f"alone-{job.method}", [job])[job.job_id]
        assert numbers(shared[job.job_id]) == numbers(alone), job.method
        assert shared[job.job_id][0]["extra"]["stages"][TRAJECTORY_STAGE] in ("computed", "loaded")
    # every epoch of the dense run trained once: 0-1 for IMC's pretraining, 2 by the dense job resuming it
    assert [(row["phase"], row["epoch"]) for row in stage_rows(tmp_path / "shared", TRAJECTORY_STAGE)] == [
        ("train", str(epoch)) for epoch in range(EPOCHS)]

    # the old way: IMC's own pretraining over the first epochs of the recipe's schedule, from theta_0
    context = make_context(imc_jobs[0], RUN, tmp_path / "solo", tmp_path / "solo-results")
    trainer = context.trainer.sibling(tmp_path / "solo")
    states, model = {}, context.new_model()
    trainer.train(model, "pretrain", imc.leading_epochs(context.train_settings, IMC_SETTINGS["pretrain_epochs"]),
                  on_epoch_end=lambda epoch, trained, masks: states.__setitem__(
                      epoch + 1, {key: value.clone() for key, value in trained.state_dict().items()}))
    served = make_context(imc_jobs[0], RUN, job_dir(tmp_path / "shared", imc_jobs[0]), tmp_path / "shared")
    analysis = imc.IMCAnalysis(served, served.method.settings)
    for state, epoch in ((analysis.pretrained["theta_P"], 2), (analysis.theta_R, 1)):
        assert all(torch.equal(state[key], value) for key, value in states[epoch].items()), epoch


def test_rewind_epoch_is_in_no_imc_analysis_key(tmp_path):
    from methods import imc

    jobs = [spec("imc-analysis", None, **imc.QUICK_HPARAMS | {"pretrain_epochs": 2, "rewind_epoch": epoch})
            for epoch in (0, 1, 2)]
    records = run_plan(tmp_path, jobs)
    assert [records[job.job_id][0]["extra"]["computed_here"]["analysis"] for job in jobs] == [True, False, False]
    assert len(list((tmp_path / STAGES_FOLDER).glob("imc-analysis-*/result.pt"))) == 1


def test_a_bf16_dense_run_evaluates_its_kept_snapshots_in_bf16(tmp_path):
    """A snapshot kept while the dense run passes it carries the evaluation of its own precision (IMC
    reads it as the pretrained accuracy), as the final state's and a replayed snapshot's do."""
    from bench.train import evaluate

    job = JobSpec(method="lth-rewind", dataset=DATASET, arch=TINY_ARCH, sparsity=0.5,
                  train={"epochs": 2, "precision": "bf16"}, hparams={"rounds": 1, "rewind_epoch": 1})
    context = make_context(job, RUN, tmp_path / "job", tmp_path)
    context.dense_trajectory(snapshots=(1,))  # the full run, keeping epoch 1 as it passes it
    kept = context.dense_state(1)
    model = context.new_model()
    model.load_state_dict(kept.state)
    expected = evaluate(model, context.data, "bf16")
    assert (kept.evaluation.loss, kept.evaluation.accuracy) == (expected.loss, expected.accuracy)
    assert kept.evaluation.loss != evaluate(model, context.data, "fp32").loss


def test_stage_folders_are_pinned():
    """A stage folder's name is its key's hash: a new recipe field or method setting that enters the key at
    its default renames every stage of every results folder, which then computes them all again (the job
    ids stay). Leave such a field out of the key at its default (`bench.stages.recipe_key`)."""
    from bench.jobs import method_for, train_settings_for

    spec = JobSpec(method="continuous-sparsification", dataset="cifar100", arch="resnet32", trial=2, sparsity=0.5,
                   train={"epochs": 3})
    recipe = train_settings_for(spec)
    assert trajectory_stage(spec, recipe).label == "dense-trajectory-366a7e46a4bb"
    assert method_for(spec).search_stage(spec, recipe).label == "cs-search-884f71925ba7"
