"""User-facing errors: one line that names the bad value and what is accepted.

Every error a user can cause (an unknown name, a sparsity out of range, a missing data root, a corrupt
checkpoint) raises `BenchError`; the command-line entry points print its message on one line and exit
with status 2 instead of showing a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class BenchError(Exception):
    """An error caused by input the user can fix; its message is one line."""


class UnknownNameError(BenchError, KeyError):
    """A name that no registry knows."""

    def __init__(self, kind: str, name: str, accepted: Iterable[str]):
        self.kind, self.name, self.accepted = kind, name, sorted(accepted)
        super().__init__(f"unknown {kind} {name!r}; accepted: {', '.join(self.accepted)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateNameError(BenchError, ValueError):
    """A name registered a second time (a plugin reusing a built-in's name, or a module imported twice)."""


class DivergedError(Exception):
    """Training produced a non-finite loss; the job ends as failed with this reason."""


def check_sparsity(value: float) -> float:
    """Return `value` as a float if it is a valid sparsity in [0, 1), else raise `BenchError`."""
    try:
        sparsity = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"sparsity {value!r} is not a number; accepted: a float in [0, 1) or 'found'") from None
    if not 0.0 <= sparsity < 1.0:
        raise BenchError(f"sparsity {sparsity} is outside [0, 1); accepted: a float in [0, 1) or 'found'")
    return sparsity
