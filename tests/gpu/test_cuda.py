"""Every CUDA path of the harness, on a real GPU: channels-last model and masks, fused SGD, cudnn.benchmark,
bf16 autocast, packing with --jobs-per-gpu, resume after a kill, masked weights staying zero.

Marked `cuda` and skipped (with that reason) where torch sees no GPU; `tests/gpu/run-gpu-check.sh` runs
them on a GPU machine together with `python -m bench.perf --device cuda` and a tiny grid.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import store
from bench.atomic import load_checked
from bench.data import DeviceData
from bench.executors import run_local
from bench.grid import PlannedJob
from bench.jobs import run_job
from bench.masks import global_mask, magnitude_scores, prunable_parameters
from bench.models import ModelInput, build_model
from bench.spec import JobSpec, RunSettings
from bench.train import EpochLog, Trainer, TrainSettings

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs CUDA (no GPU here); run tests/gpu/run-gpu-check.sh on a GPU machine"),
]

DIGITS_INPUT = ModelInput(1, 10, 8)
QUICK = TrainSettings(epochs=3, batch_size=100)
CUDA_RUN = RunSettings(device="cuda", progress=False)


@pytest.fixture()
def digits_cuda(digits) -> DeviceData:
    return DeviceData(digits, "cuda")


def train(data: DeviceData, folder: Path, settings: TrainSettings = QUICK, masks=None, seed: int = 0):
    model = build_model("resnet8", DIGITS_INPUT, seed).to(data.device)
    trainer = Trainer(data, 0, folder / "ckpt", EpochLog(folder / "epochs.csv"), progress=False,
                      checkpoint_interval_s=0.0)
    return model, trainer.train(model, "p", settings, masks=None if masks is None else dict(masks))


def test_channels_last_model_and_masks_keep_pruned_weights_exactly_zero(digits_cuda, tmp_path):
    masks = {name: mask.cuda() for name, mask in global_mask(magnitude_scores(
        build_model("resnet8", DIGITS_INPUT, 0)), 0.8).items()}
    model, result = train(digits_cuda, tmp_path, masks=masks)
    convolutions = [weight for weight in prunable_parameters(model).values() if weight.dim() == 4]
    assert convolutions and all(weight.is_contiguous(memory_format=torch.channels_last) for weight in convolutions)
    for name, weight in prunable_parameters(model).items():
        assert weight.is_cuda and torch.all(weight[masks[name] == 0] == 0)
        assert torch.count_nonzero(weight[masks[name] == 1]) == int(masks[name].sum())
    assert result.evaluation.accuracy > 0.5


def test_fused_sgd_and_cudnn_benchmark_are_used(digits_cuda, tmp_path):
    torch.backends.cudnn.benchmark = False
    train(digits_cuda, tmp_path)
    assert torch.backends.cudnn.benchmark, "the trainer turns on cudnn.benchmark on CUDA"
    saved = load_checked(tmp_path / "ckpt" / "p.pt")
    assert all(group.get("fused") for group in saved["optimizer"]["param_groups"]), "SGD is the fused kernel"


def test_bf16_autocast_learns_and_keeps_float32_weights(digits_cuda, tmp_path):
    _, fp32 = train(digits_cuda, tmp_path / "fp32")
    model, bf16 = train(digits_cuda, tmp_path / "bf16", TrainSettings(epochs=3, batch_size=100, precision="bf16"))
    assert bf16.evaluation.accuracy > 0.5 and bf16.evaluation != fp32.evaluation
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def tiny(trial: int, epochs: int = 1, **hparams) -> JobSpec:
    return JobSpec("dense", "digits", "resnet8", trial=trial, train={"epochs": epochs}, hparams=hparams)


def test_packing_two_jobs_per_gpu_runs_both_on_the_gpu(tmp_path):
    specs = [tiny(0), tiny(1)]
    lines: list[str] = []
    outcome = run_local([PlannedJob(spec) for spec in specs], tmp_path, CUDA_RUN, jobs_per_gpu=2,
                        echo=lines.append)
    assert set(outcome.states.values()) == {"done"}, lines
    assert lines[0].startswith(f"local pool: {2 * torch.cuda.device_count()} worker(s), 2 per GPU")
    for spec in specs:
        provenance = json.loads((store.job_dir(tmp_path, spec) / "provenance.json").read_text())
        assert provenance["device"].startswith("cuda") and provenance["device_name"]


def test_resume_after_a_kill_continues_from_the_last_checkpoint(tmp_path):
    """A dense job trains in its shared stage (`stages/dense-trajectory-*`), checkpointing every epoch here."""
    path = store.write_spec(tmp_path, tiny(0, epochs=30), replace(CUDA_RUN, checkpoint_interval_s=0.0))
    process = multiprocessing.get_context("spawn").Process(target=run_job, args=(str(path),))
    process.start()
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("stages/*/ckpt/train.pt")) and process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()  # SIGKILL: no handler runs; only the checkpoints on disk survive
    process.join()
    checkpoints = list(tmp_path.glob("stages/*/ckpt/train.pt"))
    assert checkpoints, "a checkpoint was written before the kill"
    assert not load_checked(checkpoints[0])["complete"], "killed mid-phase"
    status = run_job(path)
    assert status["state"] == "done", status
    epochs = [int(row["epoch"]) for row in csv.DictReader((checkpoints[0].parent.parent / "epochs.csv").open())
              if row["phase"] == "train"]
    assert epochs == list(range(30)), "every epoch appears exactly once after the resume"
