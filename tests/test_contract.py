"""The method contract, run on every registered method with its `quick_hparams`.

Each method runs on a tiny ResNet on digits at sparsity 0.5; the test checks binary masks shaped like
the weights, pruned weights exactly zero, the achieved sparsity, complete records, and that two runs
with the same seed give the same masks and numbers.
"""

import pytest
import torch

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


def run_method(name: str, folder):
    spec = contract_spec(name)
    context = make_context(spec, RunSettings(device="cpu", progress=False), folder / "jobs" / spec.job_id, folder)
    records = context.method.run(context)
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
    planned = method.planned_phases(context.spec, context.train_settings, context.sparsity)
    assert sum(phase.epochs for phase in planned) == last["epochs"], f"{name}: --dry-run's cost counts other epochs"

    again_context, again = run_method(name, tmp_path / "second")
    strip = [{key: value for key, value in record.items() if key not in VOLATILE | {"job_id"}} for record in records]
    assert strip == [{key: value for key, value in record.items() if key not in VOLATILE | {"job_id"}}
                     for record in again]
    _, again_masks = again_context.last_recorded
    if masks is not None:
        assert all(torch.equal(masks[layer], again_masks[layer]) for layer in masks)
