"""The method contract, run on every registered method with its `quick_hparams` by the checks of
`python -m bench.check` (`bench.check.contract_failures`): a tiny ResNet on digits at sparsity 0.5,
binary masks shaped like the weights, pruned weights exactly zero, the achieved sparsity, complete
records, declared stages and planned epochs, and the same records and masks after an interruption and
resume (which also reruns the job from the same seed, so it checks determinism too).
"""

import numpy as np
import pytest
import torch
from PIL import Image

from bench import run as bench_run
from bench.check import contract_failures, mask_failures, run_failures, run_job_here, same_failures
from bench.masks import prunable_parameters
from bench.spec import JobSpec
from methods.registry import get_method, method_names
from tests.conftest import TINY_ARCH

SPARSITY = 0.5


def contract_spec(name: str, arch: str = TINY_ARCH) -> JobSpec:
    method = get_method(name)
    return JobSpec(method=name, dataset="digits@300", arch=arch, trial=0,
                   sparsity=SPARSITY if method.takes_sparsity and not method.finds_sparsity else None,
                   train={"epochs": 1}, hparams=dict(method.quick_hparams))


@pytest.mark.parametrize("name", method_names())
def test_method_contract(name, tmp_path):
    assert contract_failures(name, tmp_path, sparsities=(SPARSITY,), epochs=1, rerun=False) == []


def test_the_check_names_what_a_broken_run_breaks(tmp_path):
    """The checks fail where a method breaks the contract: a pruned weight revived after training, an
    emptied layer, a record that lost a field, another result on the rerun."""
    good = run_job_here(JobSpec(method="snip", dataset="digits@300", arch=TINY_ARCH, sparsity=SPARSITY,
                                train={"epochs": 1}), tmp_path)
    assert run_failures("snip", good, "here") == []
    layer = next(iter(good.masks))
    with torch.no_grad():
        prunable_parameters(good.model)[layer][good.masks[layer] == 0] = 1.0
    assert mask_failures("snip", "here", good.model, good.masks, False) == [
        f"snip here: pruned weights of {layer} are not zero after training"]
    emptied = good.masks | {layer: torch.zeros_like(good.masks[layer])}
    with torch.no_grad():
        prunable_parameters(good.model)[layer].zero_()
    assert mask_failures("snip", "here", good.model, emptied, False) == [
        f"snip here: layer {layer} is pruned to nothing (set may_empty_layers = True if the method allows layer "
        "collapse)"]
    assert mask_failures("snip", "here", good.model, emptied, True) == []
    good.records[0].pop("accuracy")
    assert any("lacks ['accuracy']" in line for line in run_failures("snip", good, "here"))
    other = run_job_here(JobSpec(method="snip", dataset="digits@300", arch=TINY_ARCH, sparsity=0.6,
                                 train={"epochs": 1}), tmp_path)
    assert same_failures("snip", "rerun", other, other) == []
    assert same_failures("snip", "rerun", good, other)[0].startswith("snip rerun: records differ in ")


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
    run = run_job_here(contract_spec(name, arch), arch_results(arch))
    assert run_failures(name, run, f"on {arch}") == []
    assert all(record["arch"] == arch for record in run.records)


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
