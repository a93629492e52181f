"""`bench.api` on a model prunebench did not build (torchvision's resnet18): exact sparsity for every
method it accepts, masks that stay applied in a plain optimizer loop, torch.nn.utils.prune hand-off, and
the docs/api.md example run as written."""

import re
from pathlib import Path

import pytest
import torch
import torchvision

from bench import api
from bench.errors import BenchError
from bench.masks import keep_count, prunable_parameters

SPARSITY = 0.9


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


@pytest.fixture(scope="module")
def batches():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(20, 3, 16, 16, generator=generator)
    labels = torch.arange(20) % 10
    return [(images[:10], labels[:10]), (images[10:], labels[10:])]


@pytest.mark.parametrize("method, settings", [("snip", {}), ("grasp", {}), ("synflow", {"iterations": 2}),
                                              ("sanity-check", {}), ("magnitude", {}), ("random", {})])
def test_prune_hits_the_exact_sparsity_on_torchvision_resnet18(resnet18, batches, method, settings):
    before = {name: value.clone() for name, value in resnet18.state_dict().items()}
    masks = api.prune(resnet18, method, SPARSITY, batches, **settings)
    weights = prunable_parameters(resnet18)
    assert set(masks) == set(weights) and "fc.weight" in masks and "conv1.weight" in masks
    assert all(masks[name].shape == weights[name].shape for name in masks)
    total = sum(weight.numel() for weight in weights.values())
    assert int(sum(mask.sum() for mask in masks.values())) == keep_count(total, SPARSITY)
    assert all(torch.equal(before[name], value) for name, value in resnet18.state_dict().items()), "model changed"


def test_methods_disagree_and_the_same_seed_repeats(resnet18, batches):
    snip = api.prune(resnet18, "snip", SPARSITY, batches)
    assert not all(torch.equal(snip[name], mask) for name, mask in api.prune(resnet18, "magnitude", SPARSITY).items())
    first, again = (api.prune(resnet18, "random", SPARSITY, seed=4) for _ in range(2))
    assert all(torch.equal(first[name], again[name]) for name in first)


def test_bad_method_setting_and_sparsity_are_one_line_errors(resnet18):
    with pytest.raises(BenchError, match="cannot prune without training; accepted: grasp, magnitude, random"):
        api.prune(resnet18, "lth-rewind", 0.5)
    with pytest.raises(BenchError, match="unknown setting"):
        api.prune(resnet18, "synflow", 0.5, iterationz=3)
    with pytest.raises(BenchError, match="outside"):
        api.prune(resnet18, "random", 1.5)


def test_apply_masks_keeps_pruned_weights_zero_through_sgd_and_adam(batches):
    for optimizer_class in (torch.optim.SGD, torch.optim.AdamW):
        model = torchvision.models.resnet18(num_classes=10)
        masks = api.prune(model, "random", 0.8)
        api.apply_masks(model, masks)
        optimizer = optimizer_class(model.parameters(), lr=0.1, weight_decay=1e-2,
                                    **({"momentum": 0.9} if optimizer_class is torch.optim.SGD else {}))
        for images, labels in batches:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert api.sparsity(model) == pytest.approx(0.8, abs=1e-6)
        weights = prunable_parameters(model)
        assert all(bool((weights[name][masks[name] == 0] == 0).all()) for name in masks)


def test_to_torch_prune_hands_the_masks_to_torch(batches):
    model = torchvision.models.resnet18(num_classes=10)
    masks = api.prune(model, "magnitude", 0.5)
    api.to_torch_prune(model, masks)
    assert torch.equal(model.fc.weight_mask, masks["fc.weight"].bool().float())
    assert hasattr(model.layer1[0].conv1, "weight_orig")
    assert api.sparsity(model) == pytest.approx(0.5, abs=1e-6)


def test_api_page_example_runs_as_written(capsys):
    page = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    example = re.search(r"<!-- api-example -->\n```python\n(.*?)```", page, re.S)
    assert example, "docs/api.md lacks the api example block"
    exec(compile(example.group(1), "docs/api.md", "exec"), {})
    assert float(capsys.readouterr().out.split()[-1]) == pytest.approx(0.9, abs=1e-6)
