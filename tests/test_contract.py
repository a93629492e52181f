"""The method contract, run on every registered method with its `quick_hparams`.

Each method runs on a tiny ResNet on digits at sparsity 0.5; the test checks binary masks shaped like
the weights, pruned weights exactly zero, the achieved sparsity, complete records, and that two runs
with the same seed give the same masks and numbers.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from bench import run as bench_run
from bench.jobs import make_context
from bench.masks import check_binary, prunable_parameters
from bench.spec import JobSpec, RunSettings
from methods.base import RECORD_FIELDS, SPARSITY_TOLERANCE, check_record
from methods.registry import get_method, method_names
from tests.conftest import TINY_ARCH

SPARSITY = 0.5
VOLATILE = {"runtime_s", "scoring_s", "extra"}


def contract_spec(name: str) -> JobSpec:
    method = get_method(name)
    return JobSpec(method=name, dataset="digits@300", arch=TINY_ARCH, trial=0,
                   sparsity=SPARSITY if method.takes_sparsity and not method.finds_sparsity else None,
                   train={"epochs": 1}, hparams=dict(method.quick_hparams))


def run_method(name: str, folder, arch: str = TINY_ARCH):
    spec = replace(contract_spec(name), arch=arch)
    context = make_context(spec, RunSettings(device="cpu", progress=False), folder / "jobs" / spec.job_id, folder)
    records = context.run_method()
    return context, records


@pytest.mark.parametrize("name", method_names())
def test_method_contract(name, tmp_path):
    context, records = run_method(name, tmp_path / "first")
    assert records, f"{name} returned no record"
    for record in records:
        check_record(record, context.method)
        assert set(RECORD_FIELDS) <= set(record)
        assert 0.0 <= record["achieved_sparsity"] < 1.0 and 0.0 <= record["accuracy"] <= 1.0
    model, masks = context.last_recorded
    last = records[-1]
    if masks is not None:
        check_binary(masks)
        weights = prunable_parameters(model)
        assert set(masks) == set(weights)
        for layer, mask in masks.items():
            assert mask.shape == weights[layer].shape
            assert torch.all(weights[layer][mask == 0] == 0), f"{name}: pruned weights of {layer} are not zero"
    method = context.method
    if method.takes_sparsity and not method.finds_sparsity:
        assert abs(last["achieved_sparsity"] - SPARSITY) <= SPARSITY_TOLERANCE or len(records) > 1
    if not method.takes_sparsity:
        assert last["achieved_sparsity"] == 0.0
    declared = {need.stage.name for need in method.stage_needs(context.spec, context.train_settings)}
    assert declared <= set(context.stages), f"{name} declares stages it does not use"
    planned = method.planned_phases(context.spec, context.train_settings, context.sparsity)
    assert sum(phase.epochs for phase in planned) == last["epochs"], f"{name}: --dry-run's cost counts other epochs"

    again_context, again = run_method(name, tmp_path / "second")
    strip = [{key: value for key, value in record.items() if key not in VOLATILE | {"job_id"}} for record in records]
    assert strip == [{key: value for key, value in record.items() if key not in VOLATILE | {"job_id"}}
                     for record in again]
    _, again_masks = again_context.last_recorded
    if masks is not None:
        assert all(torch.equal(masks[layer], again_masks[layer]) for layer in masks)


@pytest.fixture(scope="module")
def arch_results(tmp_path_factory):
    """arch -> one results folder for every method's job on it."""
    folders = {}
    return lambda arch: folders.setdefault(arch, tmp_path_factory.mktemp(arch))


@pytest.mark.parametrize("arch, name", [(arch, name) for arch in ("wrn10-1", "vgg11", "resnet18")
                                        for name in method_names()])
def test_methods_on_the_other_architectures(arch, name, arch_results):
    """Every method on a Wide ResNet, a VGG and ResNet-18 (8x8 digits), where the architecture-dependent
    steps live: SynFlow's float64 copy, GraSP's classifier re-draw, sanity-check's layer-ratio rule, the
    Hessian of IMC and Flow&Prune (`tests/test_api.py` runs the prune-at-init methods on torchvision's
    resnet18). The jobs of one arch share a results folder, as a grid's do (one dense run, one IMC
    analysis)."""
    context, records = run_method(name, arch_results(arch), arch)
    for record in records:
        check_record(record, context.method)
        assert record["arch"] == arch
    model, masks = context.last_recorded
    if masks is not None:
        weights = prunable_parameters(model)
        assert set(masks) == set(weights)
        assert all(torch.all(weights[layer][mask == 0] == 0) for layer, mask in masks.items())


def test_cli_runs_the_new_archs_on_small_32x32_data(tmp_path, capsys):
    """The issue's command: --arch vgg16,wrn16-8,resnet18 --methods snip,synflow on a 32x32 ImageFolder."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for label in range(2):
            folder = tmp_path / "data" / split / f"c{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    code = bench_run.main(["--arch", "vgg16,wrn16-8,resnet18", "--methods", "snip,synflow", "--dataset", "imagefolder",
                           "--data-root", str(tmp_path / "data"), "--epochs", "1", "--sparsity", "0.9",
                           "--results", str(tmp_path / "results"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("| done") == 6 and "0.900" in out
