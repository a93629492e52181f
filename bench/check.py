"""`python -m bench.check NAME [NAME ...]`: does a method keep the contract the harness relies on?

Runs the method (with its `quick_hparams`) on the offline data (`digits@300`, 8x8 images) with a tiny
architecture (`resnet8`) at two sparsities (one job where the method takes none or finds its own), each
in a fresh results folder, and checks what the harness builds on:
- every record complete (`bench.record_check.RECORD_FIELDS`) and the achieved sparsity within 0.005 of the
  request (not for methods that find their sparsity; an iterative method's last round);
- the mask binary and shaped like the weights, and the pruned weights still exactly zero after training;
- a `Pruner` (a mask without training) leaves the model it scores unchanged, BatchNorm statistics included;
- no layer pruned to nothing, unless the method declares `may_empty_layers` (layer collapse);
- the stages it declares (`stage_needs`) used, and `planned_phases` counting the epochs it trained;
- the same records and masks on a rerun with the same seed (deterministic);
- the same records and masks when the job is interrupted after its first trained epoch (as Ctrl-C or a
  crash does: the training loop keeps its checkpoint) and then run again in the same folder (resume).
Each failure is one line naming the method and what is wrong; the exit status is 1 if any. The
built-in contract test (`tests/test_contract.py`) runs the same checks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.cli import guarded
from bench.errors import BenchError, check_sparsity
from bench.jobs import make_context
from bench.masks import Masks, prunable_parameters
from bench.record_check import check_record
from bench.spec import JobSpec, RunSettings
from methods.registry import Pruner, get_method

DATASET = "digits@300"
ARCH = "resnet8"
SPARSITIES = (0.5, 0.9)
EPOCHS = 2
VOLATILE = {"job_id", "runtime_s", "scoring_s", "extra"}
"""Record fields that legitimately differ between two runs of one job (times; which stages were loaded)."""


class Interrupted(Exception):
    """Raised at the end of a trained epoch to stop a job as Ctrl-C or a crash would."""


@dataclass
class CheckRun:
    """One run of a job: its records and the model and masks of its last record."""

    records: list[dict[str, Any]]
    model: nn.Module
    masks: Masks | None
    context: Any


def contract_spec(name: str, sparsity: float | None, epochs: int = EPOCHS) -> JobSpec:
    """The check's job of method `name` at `sparsity` (None where the method takes none or finds its own)."""
    method = get_method(name)
    takes = method.takes_sparsity and not method.finds_sparsity
    return JobSpec(method=name, dataset=DATASET, arch=ARCH, trial=0, sparsity=sparsity if takes else None,
                   train={"epochs": epochs}, hparams=dict(method.quick_hparams))


def check_sparsities(name: str, sparsities: tuple[float, ...] = SPARSITIES) -> list[float | None]:
    """The requested sparsities the check runs `name` at: one job at None for methods that take none."""
    method = get_method(name)
    return list(sparsities) if method.takes_sparsity and not method.finds_sparsity else [None]


def interrupt_after(context: Any, epochs: int) -> None:
    """Make the job's training loop stop (`Interrupted`) once `epochs` epochs are trained, in any phase
    or shared stage, through the loop's own `on_epoch_end` hook (checkpoints are written as on Ctrl-C)."""
    trainer = context.trainer
    train = trainer.train
    trained = [0]

    def interrupting(model, phase, settings, *args, on_epoch_end=None, **options):
        def hook(epoch, net, masks):
            if on_epoch_end is not None:
                on_epoch_end(epoch, net, masks)
            trained[0] += 1
            if trained[0] == epochs:
                raise Interrupted(f"stopped after {epochs} trained epoch(s)")

        return train(model, phase, settings, *args, on_epoch_end=hook, **options)

    trainer.train = interrupting


def run_job_here(spec: JobSpec, results: Path, stop_after: int | None = None) -> CheckRun:
    """Run `spec` in `results` in this process (stopped after `stop_after` trained epochs if given)."""
    folder = results / "jobs" / spec.job_id
    context = make_context(spec, RunSettings(device="cpu", progress=False, log_every=0), folder, results)
    if stop_after is not None:
        interrupt_after(context, stop_after)
    records = context.run_method()
    model, masks = context.last_recorded if context.last_recorded else (None, None)
    return CheckRun(records, model, masks, context)


def run_failures(name: str, run: CheckRun, where: str) -> list[str]:
    """What is wrong with one run's records, mask and declarations (one line each)."""
    failures = []
    context, method = run.context, run.context.method
    if not run.records:
        return [f"{name} {where}: returned no record"]
    for record in run.records:
        try:
            check_record(record, method)
        except (ValueError, RuntimeError) as error:
            failures.append(f"{name} {where}: record of round {record.get('round')}: {error}")
    if run.masks is not None:
        failures += mask_failures(name, where, run.model, run.masks, method.may_empty_layers)
    if isinstance(method, Pruner) and context.sparsity is not None:
        failures += pruner_failures(name, where, context)
    if not method.takes_sparsity and run.records[-1]["achieved_sparsity"] != 0.0:
        failures.append(f"{name} {where}: takes no sparsity but recorded sparsity {run.records[-1]['achieved_sparsity']}")
    declared = {need.stage.name for need in method.stage_needs(context.spec, context.train_settings)}
    if not declared <= set(context.stages):
        failures.append(f"{name} {where}: declares stages {sorted(declared - set(context.stages))} (stage_needs) it "
                        "did not use")
    planned = method.planned_phases(context.spec, context.train_settings, context.sparsity)
    if planned is not None and sum(phase.epochs for phase in planned) != run.records[-1]["epochs"]:
        failures.append(f"{name} {where}: planned_phases count {sum(phase.epochs for phase in planned)} epochs, the "
                        f"record {run.records[-1]['epochs']} (--dry-run's cost would be wrong)")
    return failures


def pruner_failures(name: str, where: str, context: Any) -> list[str]:
    """A `Pruner` must not change the model it scores (weights, BatchNorm statistics): the job trains it."""
    method, model = context.method, context.new_model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    batches = method.job_batches(context) if hasattr(method, "job_batches") else []
    size = context.model_input.image_size
    method.prune(model, batches, context.sparsity, context.seed(name), (context.model_input.in_channels, size, size))
    changed = [key for key, value in model.state_dict().items() if not torch.equal(value, before[key])]
    if not changed:
        return []
    return [f"{name} {where}: prune changed the model it scored ({', '.join(changed[:3])}"
            f"{', ...' if len(changed) > 3 else ''}); accepted: a Pruner leaves the model as it was (score BatchNorm "
            "with bn_mode(model, train=False), or restore what it changes)"]


def mask_failures(name: str, where: str, model: nn.Module, masks: Masks, may_empty_layers: bool) -> list[str]:
    """Binary masks shaped like the prunable weights, pruned weights zero, no layer emptied (unless allowed)."""
    weights = prunable_parameters(model)
    if set(masks) != set(weights):
        return [f"{name} {where}: mask layers {sorted(set(masks) ^ set(weights))} differ from the prunable weights"]
    failures = []
    for layer, mask in masks.items():
        if mask.shape != weights[layer].shape or not bool(((mask == 0) | (mask == 1)).all()):
            failures.append(f"{name} {where}: mask of {layer} is not a 0/1 tensor shaped like the weight")
        elif bool(weights[layer].detach()[mask == 0].any()):
            failures.append(f"{name} {where}: pruned weights of {layer} are not zero after training")
        elif not may_empty_layers and not bool(mask.any()):
            failures.append(f"{name} {where}: layer {layer} is pruned to nothing (set may_empty_layers = True if "
                            "the method allows layer collapse)")
    return failures


def same_failures(name: str, what: str, first: CheckRun, second: CheckRun) -> list[str]:
    """Where `second` differs from `first` in its records (times and stage use aside) or masks."""
    def stable(records):
        return [{key: value for key, value in record.items() if key not in VOLATILE} for record in records]

    ours, theirs = stable(first.records), stable(second.records)
    if ours != theirs:
        if len(ours) != len(theirs):
            return [f"{name} {what}: {len(theirs)} record(s) instead of {len(ours)}"]
        fields = sorted({key for a, b in zip(ours, theirs, strict=True) for key in a.keys() | b.keys()
                         if a.get(key) != b.get(key)})
        return [f"{name} {what}: records differ in {', '.join(fields)}"]
    if first.masks is not None and second.masks is not None and not all(
            torch.equal(first.masks[layer], second.masks[layer]) for layer in first.masks):
        return [f"{name} {what}: the masks differ"]
    return []


def contract_failures(name: str, results: Path, sparsities: tuple[float, ...] = SPARSITIES, epochs: int = EPOCHS,
                      rerun: bool = True, resume: bool = True) -> list[str]:
    """Every contract failure of method `name` (one line each), its runs under `results`."""
    failures: list[str] = []
    levels = check_sparsities(name, sparsities)
    for index, sparsity in enumerate(levels):
        where = f"at sparsity {sparsity}" if sparsity is not None else "(no requested sparsity)"
        spec = contract_spec(name, sparsity, epochs)
        attempts = [("reference", None)] + ([("rerun", None)] if rerun and index == 0 else []) \
            + ([("interrupted", 1)] if resume and index == 0 else [])
        runs: dict[str, CheckRun] = {}
        for label, stop_after in attempts:
            folder = results / f"{label}-{index}"
            try:
                runs[label] = run_job_here(spec, folder, stop_after)
            except Interrupted:
                runs[label] = run_job_here(spec, folder)  # the same folder: resumes from the checkpoints
            except Exception as error:  # the method's own code failed: say so and check the rest
                failures.append(f"{name} {where}: the {label} run failed: {type(error).__name__}: {error}")
                if label == "reference":
                    break
        if "reference" not in runs:
            continue
        failures += run_failures(name, runs["reference"], where)
        if "rerun" in runs:
            failures += same_failures(name, f"{where}, rerun with the same seed", runs["reference"], runs["rerun"])
        if "interrupted" in runs:
            failures += same_failures(name, f"{where}, interrupted after one epoch and resumed", runs["reference"],
                                      runs["interrupted"])
    return failures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.check", description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="+", help="registered method names (built-in or plugin)")
    parser.add_argument("--sparsity", default=",".join(f"{level:g}" for level in SPARSITIES),
                        help=f"comma-separated requested sparsities (default {','.join(map(str, SPARSITIES))})")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs per training phase (default {EPOCHS})")
    parser.add_argument("--keep", type=Path, help="run the jobs under this folder and keep it (default: a temporary one)")
    return parser


@guarded
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sparsities = tuple(check_sparsity(item) for item in args.sparsity.split(",") if item.strip())
    if not sparsities:
        raise BenchError(f"--sparsity {args.sparsity!r}; accepted: comma-separated floats in [0, 1)")
    if args.epochs < 1:
        raise BenchError(f"--epochs {args.epochs}; accepted: an integer >= 1")
    for name in args.methods:
        get_method(name)  # an unknown name: one line naming the accepted ones, before any work
    failed = 0
    with tempfile.TemporaryDirectory(prefix="prunebench-check-") as scratch:
        for name in args.methods:
            results = (args.keep or Path(scratch)) / name
            failures = contract_failures(name, results, sparsities, args.epochs)
            for line in failures:
                print(f"FAIL {line}")
            levels = ", ".join("none" if level is None else f"{level:g}" for level in check_sparsities(name, sparsities))
            print(f"{name}: {'FAILS' if failures else 'passes'} the contract ({len(failures)} failure(s); sparsities "
                  f"{levels}; {DATASET}, {ARCH}, {args.epochs} epoch(s) per phase)")
            failed += bool(failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
