"""LTH (reinit / rewind / finetune), Flow&Prune and Continuous Sparsification run as jobs on 300 digits
with the tiny ResNet: per-round sparsity, what the surviving weights become, resuming mid-round,
Flow&Prune's per-epoch sparsity and CS's two sparsities."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from baselines.continuous_sparsification import soft_masks, ticket_masks
from baselines.lth import round_sparsity, rounds_for
from bench.atomic import load_checked
from bench.job_context import JobContext
from bench.models import ModelInput, build_model
from bench.seeds import derive_seed
from bench.spec import JobSpec
from bench.store import job_dir, read_metrics, read_status
from tests.conftest import TINY_ARCH as ARCH
from tests.conftest import run_spec

DATASET = "digits@300"
DIGITS = ModelInput(1, 10, 8)


def job(method: str, sparsity: float | None = 0.5, epochs: int = 2, **hparams) -> JobSpec:
    return JobSpec(method=method, dataset=DATASET, arch=ARCH, sparsity=sparsity, train={"epochs": epochs},
                   hparams=hparams)


def run(results: Path, spec: JobSpec, retry_failed: bool = False) -> list[dict]:
    status = run_spec(results, spec, retry_failed=retry_failed)
    assert status["state"] == "done", status
    return read_metrics(job_dir(results, spec))


class PhaseSpy:
    """Wraps `JobContext.train`: the full state each phase starts from and ends each epoch with."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: tuple[str, int] | None = None):
        self.starts: dict[str, dict[str, torch.Tensor]] = {}
        self.epoch_ends: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        original = JobContext.train
        spy = self

        def train(context, model, phase, masks=None, settings=None, on_epoch_end=None, **options):
            spy.starts[phase] = {key: value.clone() for key, value in model.state_dict().items()}

            def hook(epoch, trained, current):
                if (phase, epoch) == fail_at:
                    raise RuntimeError("interrupted by the test")
                spy.epoch_ends[(phase, epoch)] = {key: value.clone() for key, value in trained.state_dict().items()}
                return on_epoch_end(epoch, trained, current) if on_epoch_end else None

            return original(context, model, phase, masks, settings, on_epoch_end=hook, **options)

        monkeypatch.setattr(JobContext, "train", train)


def dense_run(results: Path, name: str = "result.pt") -> dict[str, torch.Tensor]:
    """The shared dense trajectory's final state (or, by `name`, one of its snapshots)."""
    folder = next((results / "stages").glob("dense-trajectory-*"))
    path = folder / name if name == "result.pt" else folder / "snapshots" / name
    return load_checked(path)["model"]


def round_masks(results: Path, spec: JobSpec, round_index: int) -> dict[str, torch.Tensor]:
    return load_checked(job_dir(results, spec) / "ckpt" / f"round{round_index}.pt")["masks"]


def masked_weights(state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: state[name] * mask for name, mask in masks.items()}


def test_rounds_reach_the_requested_sparsity():
    assert [round(round_sparsity(index, 0.1), 3) for index in range(1, 8)] == [
        0.1, 0.19, 0.271, 0.344, 0.41, 0.469, 0.522]
    assert rounds_for(0.5, 0.1) == 7
    assert rounds_for(0.19, 0.1) == 2


def test_lth_sparsity_after_round_r_and_cumulative_records(tmp_path):
    spec = job("lth-reinit", sparsity=0.27, epochs=1)
    records = run(tmp_path, spec)
    assert [record["round"] for record in records] == [1, 2, 3]
    for record in records:
        exact = 1 - 0.9 ** record["round"]
        assert abs(record["achieved_sparsity"] - exact) <= 1.0 / record["prunable_weights"]
        assert record["epochs"] == record["round"] + 1  # the dense run plus one run per round
    runtimes = [record["runtime_s"] for record in records]
    assert runtimes == sorted(runtimes) and runtimes[0] > 0


def test_lth_reinit_gives_the_survivors_a_fresh_init(tmp_path, monkeypatch):
    spy = PhaseSpy(monkeypatch)
    spec = job("lth-reinit", rounds=1)
    run(tmp_path, spec)
    masks = round_masks(tmp_path, spec, 1)
    fresh = build_model(ARCH, DIGITS, derive_seed(0, "reinit", 1)).state_dict()
    theta_0 = build_model(ARCH, DIGITS, derive_seed(0, "init")).state_dict()
    start = masked_weights(spy.starts["round1"], masks)
    for name, value in masked_weights(fresh, masks).items():
        torch.testing.assert_close(start[name], value, rtol=0, atol=0)
        assert not torch.equal(start[name], masked_weights(theta_0, masks)[name])
        assert not torch.equal(start[name], masked_weights(dense_run(tmp_path), masks)[name])


def test_lth_rewind_restores_the_rewind_epoch_state_exactly(tmp_path, monkeypatch):
    spy = PhaseSpy(monkeypatch)
    spec = job("lth-rewind", epochs=3, rounds=1, rewind_epoch=2)
    run(tmp_path, spec)
    rewound = dense_run(tmp_path, "epoch2.pt")  # the dense run's state after epoch 2 (tests/test_stages.py
    assert spy.starts["round1"].keys() == rewound.keys()  # checks it against a run that trains it itself)
    for key, value in rewound.items():  # every tensor: weights, BN affine and running statistics
        assert torch.equal(spy.starts["round1"][key], value), key
    assert not torch.equal(spy.starts["round1"]["fc.weight"], dense_run(tmp_path)["fc.weight"])


def test_lth_finetune_keeps_the_trained_weights_at_a_constant_small_lr(tmp_path, monkeypatch):
    spy = PhaseSpy(monkeypatch)
    spec = job("lth-finetune", epochs=2, rounds=1)
    run(tmp_path, spec)
    for key, value in dense_run(tmp_path).items():  # round 0: the dense run's final state
        assert torch.equal(spy.starts["round1"][key], value), key
    with (job_dir(tmp_path, spec) / "epochs.csv").open() as handle:
        rates = [float(row["lr"]) for row in csv.DictReader(handle) if row["phase"] == "round1"]
    assert rates == [0.001, 0.001]
    final = load_checked(job_dir(tmp_path, spec) / "ckpt" / "round1.pt")
    for name, mask in final["masks"].items():  # pruned weights stay exactly zero while fine-tuning
        assert bool((final["model"][name][mask == 0] == 0).all())


def test_lth_resumes_mid_round_with_the_same_numbers(tmp_path, monkeypatch):
    spec = job("lth-rewind", epochs=2, rounds=2, rewind_epoch=1)
    reference = run(tmp_path / "uninterrupted", spec)
    with monkeypatch.context() as patch:
        PhaseSpy(patch, fail_at=("round2", 1))
        status = run_spec(tmp_path / "interrupted", spec)
    assert status["state"] == "failed"
    folder = job_dir(tmp_path / "interrupted", spec)
    assert load_checked(folder / "ckpt" / "round2.pt")["next_epoch"] == 1
    resumed = run(tmp_path / "interrupted", spec, retry_failed=True)
    assert read_status(folder)["attempt"] == 2
    for field in ("round", "achieved_sparsity", "accuracy", "test_loss", "epochs"):
        assert [record[field] for record in resumed] == [record[field] for record in reference]


def test_flow_prune_prunes_each_round_to_the_section_5_schedule(tmp_path):
    spec = job("flow-prune", sparsity=0.5, epochs=4, rounds=2, importance_samples=128)
    records = run(tmp_path, spec)
    with (job_dir(tmp_path, spec) / "epochs.csv").open() as handle:
        sparsities = [float(row["sparsity"]) for row in csv.DictReader(handle)]
    prunable = records[0]["prunable_weights"]
    expected = [1 - 2 * 0.5 / (2 * 0.5 + 0.5), 0.5, 0.5, 0.5]  # R_i = n(1-p) / (n(1-p) + i p)
    assert sparsities == pytest.approx(expected, abs=1.0 / prunable)
    assert records[0]["extra"]["rounds_used"] == 2 and records[0]["scoring_s"] > 0


def test_continuous_sparsification_records_found_and_trained_sparsity(tmp_path):
    found = run(tmp_path, job("continuous-sparsification", sparsity=None, epochs=2))[0]
    assert found["requested_sparsity"] is None and not found["extra"]["forced"]
    assert found["achieved_sparsity"] == pytest.approx(found["extra"]["found_sparsity"])
    assert found["epochs"] == 2 * 1 + 2  # two search rounds of half the epochs, then the ticket
    forced = run(tmp_path, job("continuous-sparsification", sparsity=0.3, epochs=2))[0]
    assert forced["extra"]["forced"] and forced["achieved_sparsity"] == pytest.approx(0.3, abs=1e-5)
    assert forced["extra"]["found_sparsity"] == pytest.approx(found["extra"]["found_sparsity"])


def test_continuous_sparsification_masks():
    scores = {"w": torch.tensor([-0.5, 0.0, 0.2, 1.0])}
    torch.testing.assert_close(soft_masks({"w": torch.zeros(3)}, 50.0, 0.0)["w"], torch.ones(3))
    assert ticket_masks(scores, None)["w"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert ticket_masks(scores, 0.75)["w"].tolist() == [0.0, 0.0, 0.0, 1.0]
