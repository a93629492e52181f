"""The training loop: recipe schedule, masks held at zero, resume equivalence, divergence."""

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench.atomic import load_checked
from bench.errors import BenchError, DivergedError
from bench.masks import global_mask, magnitude_scores, prunable_parameters
from bench.models import ModelInput, build_model
from bench.train import EpochLog, Trainer, TrainSettings

DIGITS_INPUT = ModelInput(1, 10, 8)
QUICK = TrainSettings(epochs=3, batch_size=100)


def new_model(seed: int = 0):
    return build_model("resnet8", DIGITS_INPUT, seed)


def trainer_for(digits_device, tmp_path, trial=0, checkpoint_interval_s=0.0) -> Trainer:
    """A trainer that checkpoints after every epoch (interval 0), unless told otherwise."""
    return Trainer(digits_device, trial, tmp_path / "ckpt", EpochLog(tmp_path / "epochs.csv"), progress=False,
                   checkpoint_interval_s=checkpoint_interval_s)


def test_schedule_drops_at_half_and_three_quarters():
    settings = TrainSettings()
    assert settings.milestones() == [80, 120]
    assert [settings.lr_at(epoch) for epoch in (0, 79, 80, 119, 120, 159)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(BenchError, match="epochs"):
        TrainSettings(epochs=-1)


def test_masked_weights_stay_exactly_zero_with_momentum_and_decay(digits_device, tmp_path):
    model = new_model()
    masks = global_mask(magnitude_scores(model), 0.8)
    result = trainer_for(digits_device, tmp_path).train(model, "masked", QUICK, masks=masks)
    for name, weight in prunable_parameters(model).items():
        assert torch.all(weight[masks[name] == 0] == 0)
        assert torch.count_nonzero(weight[masks[name] == 1]) == int(masks[name].sum())
    assert result.epochs == 3 and result.evaluation.accuracy > 0.5


def test_epoch_hook_can_change_masks_mid_training(digits_device, tmp_path):
    model = new_model()

    def prune_after_first_epoch(epoch, model, masks):
        return global_mask(magnitude_scores(model), 0.5) if epoch == 0 else None

    result = trainer_for(digits_device, tmp_path).train(model, "hook", QUICK, on_epoch_end=prune_after_first_epoch)
    for name, weight in prunable_parameters(model).items():
        assert torch.all(weight[result.masks[name] == 0] == 0)
    rows = list(csv.DictReader((tmp_path / "epochs.csv").open()))
    assert [float(row["sparsity"]) for row in rows] == pytest.approx([0.5, 0.5, 0.5], abs=1e-3)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_identical_result(digits_device, tmp_path):
    reference_model = new_model()
    reference = trainer_for(digits_device, tmp_path / "a").train(reference_model, "p", QUICK)

    def crash_after_epoch_one(epoch, model, masks):
        if epoch == 1:
            raise Interrupt

    model = new_model()
    with pytest.raises(Interrupt):
        trainer_for(digits_device, tmp_path / "b").train(model, "p", QUICK, on_epoch_end=crash_after_epoch_one)
    resumed_model = new_model(seed=99)  # a fresh process would start from scratch: the checkpoint decides
    resumed = trainer_for(digits_device, tmp_path / "b").train(resumed_model, "p", QUICK)
    assert resumed.evaluation.accuracy == reference.evaluation.accuracy
    for a, b in zip(reference_model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    epochs = [int(row["epoch"]) for row in csv.DictReader((tmp_path / "b" / "epochs.csv").open())]
    assert epochs == [0, 1, 2]


def test_checkpoints_follow_the_wall_clock_and_a_stop_keeps_the_last_epoch(digits_device, tmp_path):
    """With an hour between checkpoints nothing is written while the phase trains; a crash or Ctrl-C
    writes the last finished epoch, and the resumed phase continues after it with the same numbers."""
    reference = trainer_for(digits_device, tmp_path / "a").train(new_model(), "p", QUICK)
    trainer = trainer_for(digits_device, tmp_path / "b", checkpoint_interval_s=3600.0)
    written_while_training = []

    def stop_after_epoch_one(stop):
        def hook(epoch, model, masks):
            written_while_training.append(trainer.checkpoint_path("p").exists())
            if epoch == 1:
                raise stop
        return hook

    for stop in (Interrupt(), KeyboardInterrupt()):
        trainer.checkpoint_path("p").unlink(missing_ok=True)
        with pytest.raises(type(stop)):
            trainer.train(new_model(), "p", QUICK, on_epoch_end=stop_after_epoch_one(stop))
        saved = load_checked(trainer.checkpoint_path("p"))
        assert saved["next_epoch"] == 1 and not saved["complete"]
    assert written_while_training == [False, False, False, False]
    resumed = trainer_for(digits_device, tmp_path / "b").train(new_model(seed=99), "p", QUICK)
    assert resumed.evaluation.accuracy == reference.evaluation.accuracy
    epochs = [int(row["epoch"]) for row in csv.DictReader((tmp_path / "b" / "epochs.csv").open())]
    assert epochs == [0, 1, 2]


SIGTERM_AFTER_A_ROW = """
import os, signal, sys
from pathlib import Path
from bench.data import DataSettings, DeviceData, load_dataset
from bench.executors import save_and_exit
from bench.models import ModelInput, build_model
from bench.train import EpochLog, Trainer, TrainSettings

def sigterm_after_epoch_one(row):  # runs inside the epoch's commit: its row is written, its state not yet
    if row["epoch"] == 1:
        os.kill(os.getpid(), signal.SIGTERM)

signal.signal(signal.SIGTERM, save_and_exit)
folder = Path(sys.argv[1])
data = DeviceData(load_dataset("digits", DataSettings()), "cpu")
trainer = Trainer(data, 0, folder / "ckpt", EpochLog(folder / "epochs.csv", [sigterm_after_epoch_one]),
                  progress=False, checkpoint_interval_s=3600.0)
trainer.train(build_model("resnet8", ModelInput(1, 10, 8), 0), "p", TrainSettings(epochs=3, batch_size=100))
"""


def test_sigterm_between_an_epochs_row_and_its_state_keeps_that_epoch(tmp_path):
    """SIGTERM handled right after epoch 1's row reaches epochs.csv (a listener sends it) still writes
    epoch 1 into the checkpoint: the row and the state are one step, and the exit waits for its end."""
    finished = subprocess.run([sys.executable, "-c", textwrap.dedent(SIGTERM_AFTER_A_ROW), str(tmp_path)],
                              cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 128 + 15, finished.stderr
    epochs = [int(row["epoch"]) for row in csv.DictReader((tmp_path / "epochs.csv").open())]
    assert epochs == [0, 1]
    assert load_checked(tmp_path / "ckpt" / "p.pt")["next_epoch"] == 2


def test_evaluation_every_n_epochs_and_always_the_last(digits_device, tmp_path):
    settings = TrainSettings(epochs=5, batch_size=100, eval_every=2)
    result = trainer_for(digits_device, tmp_path).train(new_model(), "p", settings)
    rows = list(csv.DictReader((tmp_path / "epochs.csv").open()))
    assert [bool(row["test_accuracy"]) for row in rows] == [False, True, False, True, True]
    assert float(rows[-1]["test_accuracy"]) == result.evaluation.accuracy
    assert settings.evaluations() == 3 and settings.evaluations(start_epoch=4) == 1
    assert settings.evaluations(start_epoch=5) == 1  # a finished schedule still reports one test pass
    with pytest.raises(BenchError, match="eval_every"):
        TrainSettings(eval_every=0)


def test_bf16_autocast_trains_on_cpu_and_fp32_is_the_unchanged_default(digits_device, tmp_path):
    masks = global_mask(magnitude_scores(new_model()), 0.5)
    runs = {}
    assert QUICK.precision == "fp32"
    for name, settings in {"fp32": QUICK, "bf16": TrainSettings(epochs=3, batch_size=100, precision="bf16")}.items():
        model = new_model()
        result = trainer_for(digits_device, tmp_path / name).train(model, "p", settings, masks=dict(masks))
        runs[name] = (model, result)
    bf16_model, bf16 = runs["bf16"]
    assert bf16.evaluation.accuracy > 0.5, "a bf16 job learns digits"
    assert bf16.evaluation != runs["fp32"][1].evaluation, "bf16 autocast must change the arithmetic"
    for name, weight in prunable_parameters(bf16_model).items():
        assert weight.dtype == torch.float32 and torch.all(weight[masks[name] == 0] == 0)
    with pytest.raises(BenchError, match="accepted: fp32, bf16"):
        TrainSettings(precision="fp16")


def test_masks_are_stored_as_bool_and_restored_as_float(digits_device, tmp_path):
    model = new_model()
    masks = global_mask(magnitude_scores(model), 0.5)
    trainer = trainer_for(digits_device, tmp_path)
    trainer.train(model, "m", QUICK, masks=masks)
    stored = load_checked(trainer.checkpoint_path("m"))["masks"]
    assert all(mask.dtype == torch.bool for mask in stored.values())
    again = trainer.train(new_model(), "m", QUICK, masks=masks)
    assert all(torch.equal(again.masks[name], masks[name]) for name in masks)
    assert all(mask.dtype == torch.float32 for mask in again.masks.values())


def test_finished_phase_returns_its_final_state_without_training(digits_device, tmp_path):
    trainer = trainer_for(digits_device, tmp_path)
    model = new_model()
    first = trainer.train(model, "done", QUICK)
    again_model = new_model(seed=5)
    again = trainer.train(again_model, "done", QUICK)
    assert again.evaluation.accuracy == first.evaluation.accuracy and again.epochs == 3
    assert torch.equal(again_model.fc.weight, model.fc.weight)


def test_same_trial_same_batches_different_trial_different(digits_device, tmp_path):
    models = [new_model() for _ in range(3)]
    for index, (model, trial) in enumerate(zip(models, (0, 0, 1), strict=True)):
        trainer_for(digits_device, tmp_path / str(index), trial).train(model, "p", QUICK)
    assert torch.equal(models[0].fc.weight, models[1].fc.weight)
    assert not torch.equal(models[0].fc.weight, models[2].fc.weight)


def test_non_finite_loss_raises_diverged(digits_device, tmp_path):
    with pytest.raises(DivergedError, match="epoch 0"):
        trainer_for(digits_device, tmp_path).train(new_model(), "blowup", TrainSettings(epochs=2, lr=1e12))


def test_corrupt_checkpoint_restarts_the_phase_and_says_so(digits_device, tmp_path, capsys):
    trainer = trainer_for(digits_device, tmp_path)
    trainer.checkpoint_path("p").parent.mkdir(parents=True)
    trainer.checkpoint_path("p").write_bytes(b"not a checkpoint")
    result = trainer.train(new_model(), "p", QUICK)
    assert result.epochs == QUICK.epochs
    warning = capsys.readouterr().err
    assert "p.pt is torn" in warning and "restarting phase 'p'" in warning
    assert (trainer.ckpt_dir / "p.pt.corrupt").exists()
