"""What every job record must hold: the common fields (`RECORD_FIELDS`, made by `JobContext.record`)
and, for a method that does not find its own sparsity, an achieved sparsity within `SPARSITY_TOLERANCE`
of the requested one. `bench.jobs` checks every record before it is written; `bench.check` checks a
method's records the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from methods.registry import Method

SPARSITY_TOLERANCE = 0.005
RECORD_FIELDS = (
    "job_id", "method", "dataset", "arch", "trial", "round", "requested_sparsity", "achieved_sparsity",
    "density", "compression", "prunable_weights", "kept_weights", "total_parameters", "flops", "dense_flops", "accuracy", "top5",
    "test_loss", "epochs", "runtime_s", "scoring_s", "device", "ablation",
)


def check_record(record: dict[str, Any], method: Method) -> None:
    """Every field present; sparsity within tolerance unless the method finds its own."""
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        raise ValueError(f"record of {method.name} lacks {missing}")
    requested = record["requested_sparsity"]
    if requested is not None and not method.finds_sparsity:
        gap = abs(record["achieved_sparsity"] - requested)
        if gap > SPARSITY_TOLERANCE:
            raise RuntimeError(
                f"{method.name} reached sparsity {record['achieved_sparsity']:.4f} for requested {requested:.4f} "
                f"(off by {gap:.4f} > {SPARSITY_TOLERANCE})"
            )
