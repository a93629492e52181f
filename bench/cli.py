"""Shared command-line plumbing: one-line errors with exit code 2, device choice."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from bench.errors import BenchError

EXIT_USAGE = 2


def guarded(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Print a `BenchError` as one line on stderr and return exit code 2 instead of a traceback."""

    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE

    return wrapper


def resolve_device(name: str | None) -> str:
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise BenchError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device {name!r} asked for, but torch sees no CUDA device; accepted here: cpu")
    return name
