"""Shared command-line plumbing: one-line errors with exit code 2, device choice."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from bench.errors import BenchError

EXIT_USAGE = 2


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
INTERRUPTED = ("interrupted: finished jobs are kept and the running one has its last epoch checkpoint; "
               "rerun the same command to resume")


def guarded(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Print a `BenchError` as one line on stderr and return exit code 2 instead of a traceback; end
    Ctrl-C with one line saying the run resumes; stay quiet when stdout is a closed pipe (`| head`)."""

    def wrapper(argv: list[str] | None = None) -> int:
        try:
            code = main(argv)
            sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
            return code
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print(f"\n{INTERRUPTED}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            return quiet_broken_pipe()

    return wrapper


def quiet_broken_pipe() -> int:
    """The reader of stdout went away: point stdout at /dev/null so Python's exit flush is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def resolve_device(name: str | None) -> str:
    import torch  # here, not at the top: status and report run without it

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise BenchError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device {name!r} asked for, but torch sees no CUDA device; accepted here: cpu")
    return name
