"""`train.compile`: torch.compile'd forward passes keep masks, checkpoints, resume and determinism.

The training tests compile resnet8 on digits (Inductor's C++ kernels: tens of seconds), so they are
marked slow; whether compiling pays is measured by `python -m bench.perf --measure compile`, not here.
"""

from dataclasses import replace

import pytest
import torch

from bench.atomic import load_checked
from bench.data import DeviceData
from bench.errors import BenchError
from bench.masks import global_mask, magnitude_scores, prunable_parameters
from bench.spec import JobSpec
from bench.train import TrainSettings, cpp_compiler
from tests.test_train import Interrupt, new_model, trainer_for

COMPILED = TrainSettings(epochs=2, batch_size=100, compile=True)
needs_compiler = pytest.mark.skipif(cpp_compiler() is None, reason="torch.compile on the CPU needs a C++ compiler")


@pytest.fixture()
def even_digits(digits) -> DeviceData:
    """Digits cut to whole batches of 100 (training and test): one graph to compile for each, not four."""
    return DeviceData(replace(digits, train_images=digits.train_images[:1000], train_labels=digits.train_labels[:1000],
                              test_images=digits.test_images[:300], test_labels=digits.test_labels[:300]), "cpu")


def test_compile_is_off_by_default_part_of_the_identity_and_checked():
    assert TrainSettings().compile is False
    plain = JobSpec("dense", "digits", "resnet8")
    assert JobSpec("dense", "digits", "resnet8", train={"compile": False}).job_id == plain.job_id
    assert JobSpec("dense", "digits", "resnet8", train={"compile": True}).job_id != plain.job_id
    with pytest.raises(BenchError, match="accepted: true or false"):
        TrainSettings(compile="yes")


def test_compile_without_a_cpp_compiler_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch):
    from bench.train import compiled

    monkeypatch.setenv("CXX", "no-such-compiler-prunebench")
    with pytest.raises(BenchError, match="needs a C.. compiler .*accepted here: train.compile=false"):
        compiled(new_model(), COMPILED)
    assert compiled(new_model(), TrainSettings()) is not None


@pytest.mark.slow
@needs_compiler
def test_compiled_training_keeps_masks_and_is_deterministic(even_digits, tmp_path):
    masks = global_mask(magnitude_scores(new_model()), 0.8)
    models, results = [], []
    for name in ("a", "b"):
        model = new_model()
        results.append(trainer_for(even_digits, tmp_path / name).train(model, "p", COMPILED, masks=dict(masks)))
        models.append(model)
    for name, weight in prunable_parameters(models[0]).items():
        assert torch.all(weight[masks[name] == 0] == 0)
    assert results[0].evaluation == results[1].evaluation and results[0].evaluation.accuracy > 0.3
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved = load_checked(tmp_path / "a" / "ckpt" / "p.pt")
    assert saved["model"].keys() == models[0].state_dict().keys(), "the plain model's state_dict is saved"


@pytest.mark.slow
@needs_compiler
def test_compiled_training_resumes_to_the_same_result(even_digits, tmp_path):
    reference_model = new_model()
    reference = trainer_for(even_digits, tmp_path / "a").train(reference_model, "p", COMPILED)

    def crash_after_epoch_one(epoch, model, masks):  # epoch 0 is checkpointed, epoch 1 is lost
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        trainer_for(even_digits, tmp_path / "b").train(new_model(), "p", COMPILED,
                                                          on_epoch_end=crash_after_epoch_one)
    resumed_model = new_model(seed=99)
    resumed = trainer_for(even_digits, tmp_path / "b").train(resumed_model, "p", COMPILED)
    assert resumed.evaluation == reference.evaluation
    for a, b in zip(reference_model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
