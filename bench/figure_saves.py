"""Saving report figures in forked processes, so that a report draws several figures at once.

Laying out and rendering a figure (PNG and PDF) is most of a report's fixed cost: matplotlib spends it in
pure Python, one core at a time. `parallel_saves(workers)` makes `save` hand each finished figure to a
forked child process, which lays it out once, writes both files (atomically, as `bench.atomic` does) and
exits, while the report goes on building the next figure; at most `workers` children run at once, and
leaving the block waits for all of them. A child that fails is named in one `BenchError` after the others
finished; a file it did not finish is never left half-written.

Forking is used only where it is the platform's default way to start processes (Linux); elsewhere, with
one worker, or outside the block, `save` renders in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.atomic import atomic_write
from bench.errors import BenchError
from bench.threads import available_cores

FORMATS = ("png", "pdf")
DPI = 120

_children: dict[int, str] = {}  # pid -> figure name, oldest first, while a `parallel_saves` block runs
_failed: list[str] = []  # figures whose child failed, named when the block ends
_workers = 1


def figure_paths(folder: Path, name: str) -> list[Path]:
    return [folder / f"{name}.{kind}" for kind in FORMATS]


def render(figure, folder: Path, name: str) -> list[Path]:
    """Write `figure` as `name`.png and `name`.pdf in `folder`, laid out once; the paths written.

    A figure with a layout engine is laid out by the first save's own draw, and the second save keeps
    those positions (the engine is switched off in between): two draws, not three; one without an
    engine is fitted to its tight bounding box in each save."""
    paths = figure_paths(folder, name)
    fit = None if figure.get_layout_engine() is not None else "tight"
    for path in paths:  # through the atomic writer: a link at a figure's path is replaced, never written through
        atomic_write(path, lambda handle, kind=path.suffix[1:]: figure.savefig(handle, format=kind, dpi=DPI,
                                                                               bbox_inches=fit))
        figure.set_layout_engine("none")  # keep the positions the first save laid out
    return paths


def save(figure, folder: Path, name: str) -> list[Path]:
    """Write `figure` (see `render`), in a forked child inside a `parallel_saves` block; the paths it writes.

    The caller closes its figure right after (`matplotlib.pyplot.close`); the child has its own copy."""
    folder.mkdir(parents=True, exist_ok=True)
    if _workers <= 1:
        return render(figure, folder, name)
    while len(_children) >= _workers:
        _wait_for_oldest()
    pid = os.fork()
    if pid == 0:  # the child: render, then leave without running the parent's exit handlers
        code = 0
        try:
            render(figure, folder, name)
        except BaseException:  # noqa: BLE001 - reported by the parent through the exit code
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    _children[pid] = name
    return figure_paths(folder, name)


def _wait_for_oldest() -> None:
    """Wait for the oldest running child (only this module's children, never another subprocess)."""
    pid = next(iter(_children))
    _, status = os.waitpid(pid, 0)
    name = _children.pop(pid)
    if os.waitstatus_to_exitcode(status) != 0:
        _failed.append(name)


@contextmanager
def parallel_saves(workers: int | None = None) -> Iterator[None]:
    """Within the block, `save` renders figures in up to `workers` forked children (default: the cores
    this process may use); leaving it waits for them and raises `BenchError` naming any that failed."""
    global _workers
    workers = available_cores() if workers is None else workers
    forks = multiprocessing.get_start_method(allow_none=False) == "fork"
    previous, _workers = _workers, workers if forks and not _children else 1
    try:
        yield
    finally:
        while _children:
            _wait_for_oldest()
        _workers = previous
    failed = sorted(_failed)
    _failed.clear()
    if failed:
        raise BenchError(f"figure(s) {', '.join(failed)} could not be drawn (traceback above); the tables and "
                         "the other figures were written")
