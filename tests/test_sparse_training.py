"""Sparse training (`gmp`, `set`, `rigl`) and the layer-wise density rules, against the hand computations
of the spec (/work/shared/specs/sparse-training.md, section 7) and on the real training loop."""

from __future__ import annotations

import csv

import pytest
import torch

from baselines._sparse_training import (
    Clock,
    DropGrowSettings,
    cosine_drop_fraction,
    drop_and_grow,
    gmp_sparsity,
    random_scores,
    update_interval_for,
)
from baselines.gmp import GMPSettings, GMPUpdater
from baselines.rigl import RigLUpdater
from baselines.set import PerEpochSETUpdater, SETSettings, SETUpdater
from bench import api
from bench.atomic import load_checked
from bench.errors import BenchError
from bench.layer_density import (
    erk_sparsities,
    kept_counts,
    model_sparsities,
    random_distribution_masks,
    zeros_count,
)
from bench.masks import prunable_parameters
from bench.models import ModelInput, build_model
from bench.train import EpochLog, Trainer, TrainSettings
from tests.conftest import TINY_ARCH

TINY_SHAPES = {"conv1": (8, 3, 3, 3), "conv2": (16, 8, 3, 3), "fc": (10, 16)}
TINY_SIZES = {"conv1": 216, "conv2": 1152, "fc": 160}
DIGITS_INPUT = ModelInput(1, 10, 8)
SHORT = TrainSettings(epochs=3, batch_size=200)  # 8 iterations per epoch of digits' 1,438 images, T = 24


# --- schedules (spec 7.1, 7.2) --------------------------------------------------------------------

def test_gmp_cubic_at_chosen_steps_and_its_events():
    values = [gmp_sparsity(step, 16_000, 60_000, 0.0, 0.9) for step in (16_000, 27_000, 38_000, 49_000, 60_000, 70_000)]
    assert values == pytest.approx([0.0, 0.5203125, 0.7875, 0.8859375, 0.9, 0.9], abs=1e-12)
    expected_zeros = [(1_198, 224, 333), (1_814, 340, 504), (2_041, 382, 567), (2_073, 388, 576)]
    for value, zeros in zip(values[1:5], expected_zeros, strict=True):
        assert tuple(zeros_count(size, value) for size in (2_304, 432, 640)) == zeros
    updater = GMPUpdater(Clock(500, 80_000), GMPSettings(), {}, 0.9)
    events = [step for step in range(80_000) if updater.updates_at(step)]
    assert (updater.begin, updater.end, updater.interval) == (16_000, 60_000, 1_000)
    assert len(events) == 45 and events[0] == 16_000 and events[-1] == 60_000
    misaligned = GMPUpdater(Clock(500, 80_000), GMPSettings(end_fraction=60_500 / 80_000), {}, 0.9)
    assert [step for step in range(80_000) if misaligned.updates_at(step)][-2:] == [60_000, 60_500]


def test_rigl_drop_fraction_at_chosen_steps_and_update_iterations():
    fractions = [cosine_drop_fraction(0.3, step, 60_000) for step in (0, 15_000, 30_000, 45_000, 60_000)]
    assert fractions == pytest.approx([0.3, 0.2560660, 0.15, 0.0439340, 0.0], abs=1e-7)
    prunes = {step: [int(active * cosine_drop_fraction(0.3, step, 60_000)) for active in (64, 36, 55)]
              for step in (100, 15_000, 30_000, 45_000)}
    assert prunes == {100: [19, 10, 16], 15_000: [16, 9, 14], 30_000: [9, 5, 8], 45_000: [2, 1, 2]}
    first_zero = {active: next(step for step in range(100, 60_001, 100)
                               if int(active * cosine_drop_fraction(0.3, step, 60_000)) == 0) for active in (16, 36, 64)}
    assert first_zero == {16: 41_900, 36: 48_200, 64: 51_300}
    updater = RigLUpdater({}, Clock(500, 80_000), DropGrowSettings(), None)
    events = [step for step in range(80_000) if updater.updates_at(step)]
    assert len(events) == 600 and events[0] == 100 and events[-1] == 60_000


# --- one drop/grow event (spec 7.4, 7.5) ------------------------------------------------------------

WEIGHTS = torch.tensor([0.5, -0.1, 0.3, 0, 0, -0.7, 0, 0.05, 0, 0])
ACTIVE = torch.tensor([1.0, 1, 1, 0, 0, 1, 0, 1, 0, 0])


def test_rigl_event_drops_smallest_and_grows_by_gradient():
    gradient = torch.tensor([0, 0.9, 0.1, 0.2, 0.05, 0.3, 0.8, 0.4, 0, 0.6])
    new = drop_and_grow({"w": WEIGHTS}, {"w": ACTIVE}, 0.4, {"w": gradient.abs()})
    assert torch.nonzero(new["w"]).flatten().tolist() == [0, 1, 2, 5, 6]


def test_set_event_grows_at_random_among_the_rest_and_per_layer_counts():
    def seed(index):
        return 7 + index

    new = drop_and_grow({"w": WEIGHTS}, {"w": ACTIVE}, 0.4, random_scores({"w": WEIGHTS}, seed))
    kept = set(torch.nonzero(new["w"]).flatten().tolist())
    assert {0, 2, 5} <= kept and len(kept) == 5
    again = drop_and_grow({"w": WEIGHTS}, {"w": ACTIVE}, 0.4, random_scores({"w": WEIGHTS}, seed))
    assert torch.equal(new["w"], again["w"])
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(1_152, generator=generator)
    mask = torch.zeros(1_152)
    mask[torch.randperm(1_152, generator=generator)[:64]] = 1
    weight = weight * mask
    after = drop_and_grow({"w": weight}, {"w": mask}, 0.3, random_scores({"w": weight}, seed))["w"]
    largest = torch.argsort(weight.abs() * mask, descending=True, stable=True)[:45]
    assert int(after.sum()) == 64 and bool(after[largest].all())
    assert int((after > mask).sum()) == int((mask > after).sum()) <= 19


# --- ERK (spec 7.3) ------------------------------------------------------------------------------

def test_erk_densities_follow_the_formula_and_rigls_redistribution():
    at_09 = erk_sparsities(TINY_SHAPES, 0.9)
    epsilon = 154 / 73
    for name, shape in TINY_SHAPES.items():
        assert 1 - at_09[name] == pytest.approx(epsilon * sum(shape) / TINY_SIZES[name])
    assert kept_counts(at_09, TINY_SIZES) == {"conv1": 36, "conv2": 64, "fc": 55}
    at_05 = erk_sparsities(TINY_SHAPES, 0.5)
    assert at_05["conv1"] == at_05["fc"] == 0.0 and 1 - at_05["conv2"] == pytest.approx(388 / 1152)
    assert kept_counts(at_05, TINY_SIZES) == {"conv1": 216, "conv2": 388, "fc": 160}
    resnet20 = build_model("resnet20", ModelInput(3, 10, 32), 0)
    sizes = {name: weight.numel() for name, weight in prunable_parameters(resnet20).items()}
    densities = {name: 1 - value for name, value in model_sparsities(resnet20, "erk", 0.9).items()}
    assert sum(kept_counts(model_sparsities(resnet20, "erk", 0.9), sizes).values()) == 27_111
    assert densities["blocks.3.shortcut.0.weight"] == densities["fc.weight"] == 1.0
    assert round(densities["conv.weight"], 4) == 0.9834 and round(densities["blocks.6.shortcut.0.weight"], 4) == 0.8132
    dense_first = model_sparsities(resnet20, "uniform", 0.9, dense_first_layer=True)
    assert dense_first["conv.weight"] == 0.0 and set(list(dense_first.values())[1:]) == {0.9}


def test_erk_random_masks_in_sanity_check_and_the_api():
    model = build_model("resnet20", ModelInput(3, 10, 32), 0)
    sizes = {name: weight.numel() for name, weight in prunable_parameters(model).items()}
    expected = kept_counts(model_sparsities(model, "erk", 0.9), sizes)
    for masks in (api.prune(model, "random-erk", 0.9, seed=3),
                  api.prune(model, "sanity-check", 0.9, seed=3, distribution="erk"),
                  random_distribution_masks(model, "erk", 0.9, 3)):
        assert {name: int(mask.sum()) for name, mask in masks.items()} == expected
    with pytest.raises(BenchError, match="accepted: uniform, erk"):
        api.prune(model, "random-erk", 0.9, distribution="er")
    with pytest.raises(BenchError, match="classifier_keep_ratio"):
        api.prune(model, "sanity-check", 0.9, distribution="erk", classifier_keep_ratio=0.5)


# --- on the training loop (spec 7.6) ---------------------------------------------------------------

def tiny_model(seed: int = 1):
    return build_model(TINY_ARCH, DIGITS_INPUT, seed)


def trainer_for(digits_device, folder) -> Trainer:
    return Trainer(digits_device, 0, folder / "ckpt", EpochLog(folder / "epochs.csv"), progress=False,
                   checkpoint_interval_s=0.0)


class Checked:
    """Checks, at every iteration after an update (before its SGD step), that the weights off the mask are
    exactly zero, that the connections the update grew are exactly zero, and the per-layer counts."""

    def __init__(self, updater, model):
        self.updater, self.model, self.counts, self.grown, self.checks = updater, model, None, None, 0
        self.updates_at = self._checked(updater.updates_at)
        self.update = self._update(updater.update)

    def _checked(self, updates_at):
        def check(step):
            masks = self.updater.masks
            if masks is not None:
                weights = prunable_parameters(self.model)
                counts = {name: int(mask.sum()) for name, mask in masks.items()}
                assert self.counts is None or counts == self.counts
                self.counts = counts
                for name, mask in masks.items():
                    assert torch.all(weights[name][mask == 0] == 0)
                    if self.grown is not None and self.updater.replaces_step:  # no SGD step since the update
                        assert torch.all(weights[name][self.grown[name]] == 0)
                self.grown, self.checks = None, self.checks + 1
            return updates_at(step)
        return check

    def _update(self, update):
        def changed(step, model, gradients=None):
            old = {name: mask.clone() for name, mask in self.updater.masks.items()}
            new = update(step, model, gradients)
            self.grown = {name: (new[name] > old[name]) for name in new}
            return new
        return changed


def drop_grow_updater(kind, model, settings):
    masks = random_distribution_masks(model, "erk", 0.8, seed=5)
    return kind(masks, Clock(8, 24), settings, lambda *names: hash(names) % 1000)


@pytest.mark.parametrize("kind, settings", [(RigLUpdater, DropGrowSettings(update_interval=3)),
                                            (SETUpdater, SETSettings(update_interval=3)),
                                            (PerEpochSETUpdater, SETSettings(rewiring="per-epoch"))])
def test_masks_keep_exact_counts_and_zeros_with_momentum(kind, settings, digits_device, tmp_path):
    model = tiny_model()
    updater = drop_grow_updater(kind, model, settings)
    initial = {name: int(mask.sum()) for name, mask in updater.masks.items()}
    checked = Checked(updater, model)
    updater.updates_at, updater.update = checked.updates_at, checked.update
    trainer = trainer_for(digits_device, tmp_path)
    result = trainer.train(model, "train", SHORT, mask_updater=updater)
    assert checked.checks == 24 and checked.counts == initial
    assert {name: int(mask.sum()) for name, mask in result.masks.items()} == initial
    assert updater.events and sum(event["moved"] for event in updater.events) > 0
    assert [event["step"] for event in updater.events] == ([7, 15] if kind is PerEpochSETUpdater else [3, 6, 9, 12, 15, 18])
    weights = prunable_parameters(model)
    buffers = load_checked(trainer.checkpoint_path("train"))["optimizer"]["state"]
    parameters = list(model.parameters())
    for name, mask in result.masks.items():
        buffer = buffers[next(index for index, parameter in enumerate(parameters) if parameter is weights[name])]
        assert torch.all(buffer["momentum_buffer"][mask == 0] == 0)


@pytest.mark.parametrize("kind, skipped", [(RigLUpdater, 6), (SETUpdater, 0)])
def test_rigl_skips_the_sgd_step_of_each_update_and_set_does_not(kind, skipped, digits_device, tmp_path, monkeypatch):
    steps = []
    step = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *args, **kwargs: steps.append(1) or step(self, *args, **kwargs))
    model = tiny_model()
    updater = drop_grow_updater(kind, model, DropGrowSettings(update_interval=3))
    trainer_for(digits_device, tmp_path).train(model, "train", SHORT, mask_updater=updater)
    assert len(updater.events) == 6 and len(steps) == 24 - skipped


def test_gmp_prunes_to_each_layers_target_on_the_loop(digits_device, tmp_path):
    model = tiny_model()
    final = model_sparsities(model, "erk", 0.9)
    updater = GMPUpdater(Clock(8, 24), GMPSettings(), final, 0.9)
    result = trainer_for(digits_device, tmp_path).train(model, "train", SHORT, mask_updater=updater)
    sizes = {name: weight.numel() for name, weight in prunable_parameters(model).items()}
    assert {name: int(mask.sum()) for name, mask in result.masks.items()} == kept_counts(final, sizes)
    kept = [event["kept"] for event in updater.events]
    assert kept == sorted(kept, reverse=True) and updater.events[0]["moved"] == 0  # s(t0) = 0: a no-op
    assert [event["step"] for event in updater.events] == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("kind", [RigLUpdater, SETUpdater])
def test_resume_after_an_interruption_gives_the_same_masks_and_weights(kind, digits_device, tmp_path):
    settings = DropGrowSettings(update_interval=3)
    reference_model = tiny_model()
    reference = drop_grow_updater(kind, reference_model, settings)
    reference_result = trainer_for(digits_device, tmp_path / "a").train(reference_model, "train", SHORT,
                                                                        mask_updater=reference)

    def crash_after_epoch_one(epoch, model, masks):
        if epoch == 1:
            raise Interrupt

    model = tiny_model()
    with pytest.raises(Interrupt):
        trainer_for(digits_device, tmp_path / "b").train(model, "train", SHORT, on_epoch_end=crash_after_epoch_one,
                                                         mask_updater=drop_grow_updater(kind, model, settings))
    resumed_model = tiny_model(seed=99)  # a fresh process: the checkpoint decides
    resumed = drop_grow_updater(kind, resumed_model, settings)
    resumed_result = trainer_for(digits_device, tmp_path / "b").train(resumed_model, "train", SHORT,
                                                                      mask_updater=resumed)
    assert resumed_result.evaluation.accuracy == reference_result.evaluation.accuracy
    assert resumed.events == reference.events
    for name, mask in reference_result.masks.items():
        assert torch.equal(mask, resumed_result.masks[name])
    for a, b in zip(reference_model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_short_job_gets_a_fitted_interval_recorded_or_is_refused_if_asked(tmp_path):
    from bench.check import run_job_here
    from tests.test_contract import contract_spec

    run = run_job_here(contract_spec("rigl"), tmp_path)
    context, records = run.context, run.records
    rows = list(csv.DictReader((context.job_dir / "mask_updates.csv").open()))
    assert records[0]["extra"]["mask_updates"] == len(rows) > 0
    assert records[0]["extra"]["weights_moved"] == sum(int(row["moved"]) for row in rows)

    clock = Clock.of(context)  # the contract job: far fewer than 100 iterations before T_end
    end = clock.at(0.75)
    assert 2 <= end < 100
    context.method.settings = DropGrowSettings(update_interval=100)
    record = context.method.run(context)[0]
    expected = max(2, end // 10)
    assert record["extra"]["update_interval"] == expected
    steps = [int(row["step"]) for row in csv.DictReader((context.job_dir / "mask_updates.csv").open())]
    assert steps == list(range(expected, end + 1, expected))
    assert context.method.schedule_notes(clock) == [
        f"rigl: delta-T = 100 leaves no mask update in the {end} iterations before T_end of this {clock.total}-"
        f"iteration job; it updates every {expected} iterations instead ({end // expected} updates; "
        "hparams.rigl.short_job_updates = 10, 0 refuses such a job)"]

    context.method.settings = DropGrowSettings(update_interval=100, short_job_updates=0)
    with pytest.raises(BenchError, match=r"rigl: delta-T = 100 leaves no mask update .*short_job_updates = 0\); "
                                         r"accepted: --set hparams\.rigl\.short_job_updates=N with N >= 1"):
        context.method.run(context)


def test_update_interval_for_short_jobs_by_hand():
    long, refuse = DropGrowSettings(), DropGrowSettings(short_job_updates=0)
    assert [update_interval_for(long, end) for end in (60_000, 100, 99, 45, 19, 2, 1)] == [100, 100, 9, 4, 2, 2, None]
    assert [update_interval_for(refuse, end) for end in (100, 99)] == [100, None]
    assert update_interval_for(DropGrowSettings(short_job_updates=3), 45) == 15
