"""Drawing a report's figures several at once, in forked worker processes, in the formats asked for.

Building and rendering a figure is most of a report's fixed cost: matplotlib spends it in pure Python,
one core at a time, and a report draws the same figures for 30 jobs as for 10,000. Inside
`drawing(workers, formats)`, `draw(function, *arguments)` queues a figure function (one of
`bench.figures`: it builds its figures and saves them with `save`); `start` forks up to `workers`
worker processes, which take the queued functions one at a time, in the order asked for (ask for the
longest first), from a pipe of task numbers, so a worker that finishes early takes the next while the
report goes on with its tables. Each worker sends back the paths it wrote (JSON, `bench.forks`);
`finish`, and leaving the block, wait for them. A figure function that fails is named in one
`BenchError` after the others finished; files are written atomically (`bench.atomic`), so none is left
half-written.

Workers are forked on Linux only (`bench.forks.forks_available`); elsewhere, with one worker, or outside
the block, `draw` runs the function here and now. A `Drawing` holds its paths
once `finish` has returned (or at once when drawn here).

Formats: PNG by default (what the report's Markdown shows); `pdf` and `svg` on request, for papers. A
figure with a layout engine is laid out once, before its first save (the same pixels as savefig's own
layout pass, without the extra draw savefig makes for it); every format keeps those positions.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import forks
from bench.atomic import atomic_write
from bench.errors import BenchError
from bench.threads import available_cores

FORMATS = ("png", "pdf", "svg")
"""Figure formats a report can write; the first is always written (the Markdown links it)."""
DEFAULT_FORMATS = ("png",)
DPI = 120


@dataclass
class Drawing:
    """A figure function's outcome: `paths` written (complete once its `drawing` block has ended)."""

    name: str
    paths: list[Path] = field(default_factory=list)
    failed: bool = False

    def shown(self) -> list[Path]:
        """The paths the report's Markdown links (the PNGs)."""
        return [path for path in self.paths if path.suffix == f".{FORMATS[0]}"]


Task = tuple[Drawing, Callable[..., list[Path]], tuple]
TASK_BYTES = 4
MOST_TASKS = 65536 // TASK_BYTES
"""Figure functions one `start` hands out: their numbers must fit in a pipe (64 KiB on Linux) unread."""

_tasks: list[Task] = []  # the current block's figure functions, in the order asked for
_dispatched = 0  # how many of them workers were started for
_running: dict[int, tuple[forks.Child, int]] = {}  # pid -> worker and the index of its batch's first task
_in_block = False
_workers = 1
_formats = DEFAULT_FORMATS


def figure_paths(folder: Path, name: str) -> list[Path]:
    return [folder / f"{name}.{kind}" for kind in _formats]


def save(figure, folder: Path, name: str) -> list[Path]:
    """Write `figure` as `name`.<format> in `folder` for each format of the current block, laid out once,
    and remove its files in the other formats; the paths written. A figure without a layout engine is
    fitted to its tight bounding box in each save.
    Writes go through the atomic writer: a link at a figure's path is replaced, never written through."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in FORMATS:  # an earlier report's copy in a format not asked for now would no longer match
        if kind not in _formats:
            (folder / f"{name}.{kind}").unlink(missing_ok=True)
    paths = figure_paths(folder, name)
    engine = figure.get_layout_engine()
    if engine is not None:  # laid out here, once, at the saving dpi: savefig would add a whole draw for it
        figure.set_dpi(DPI)
        engine.execute(figure)
        figure.set_layout_engine("none")
    for path in paths:
        atomic_write(path, lambda handle, kind=path.suffix[1:]: figure.savefig(
            handle, format=kind, dpi=DPI, bbox_inches=None if engine is not None else "tight"))
    return paths


def draw(function: Callable[..., list[Path]], *arguments, name: str | None = None) -> Drawing:
    """Queue the figure function `function(*arguments)` for the workers inside a `drawing` block with more
    than one worker, else run it here and now; its `Drawing` (paths complete once `finish` has returned)."""
    drawing = Drawing(name or " ".join([function.__name__, *(str(value) for value in arguments
                                                              if isinstance(value, str))]))
    if not _in_block or _workers <= 1:
        drawing.paths = list(function(*arguments))
    else:
        _tasks.append((drawing, function, arguments))
    return drawing


def start() -> None:
    """Fork up to `workers` workers for the figure functions queued since the last start; they take one task
    number at a time from a pipe that holds all of them. Does nothing while workers run (`finish` starts
    the rest when they are done) or where nothing new is queued."""
    global _dispatched
    batch = _tasks[_dispatched:]
    if not batch or _running:
        return
    if len(batch) > MOST_TASKS:
        raise BenchError(f"{len(batch)} figure functions queued at once; at most {MOST_TASKS}")
    reader, writer = os.pipe()
    os.write(writer, b"".join(index.to_bytes(TASK_BYTES, "big") for index in range(len(batch))))
    os.close(writer)  # before forking: after the last number, a worker reads the end of the pipe
    for _ in range(min(_workers, len(batch))):
        worker = forks.start(_work, batch, reader, siblings=[worker for worker, _ in _running.values()])
        _running[worker.pid] = (worker, _dispatched)
    os.close(reader)
    _dispatched = len(_tasks)


def _work(batch: list[Task], numbers: int) -> list[tuple[int, list[str] | None]]:
    """In a forked worker: draw here the tasks of `batch` whose numbers it takes from the pipe `numbers`
    (`TASK_BYTES` each, read whole: the pipe hands each read to one reader); each one's paths, or None
    where it failed."""
    global _in_block
    _in_block = False
    _running.clear()
    done = []
    while len(chunk := os.read(numbers, TASK_BYTES)) == TASK_BYTES:
        index = int.from_bytes(chunk, "big")
        _, function, arguments = batch[index]
        try:
            done.append((index, [str(path) for path in function(*arguments)]))
        except Exception:  # noqa: BLE001 - named by the parent; the worker takes the next task
            traceback.print_exc()
            done.append((index, None))
    return done


def finish() -> list[Drawing]:
    """Start workers for what is queued, wait for them all, and give each figure function its paths (or mark
    it failed); the block's drawings, in the order asked for. The queue is empty afterwards."""
    global _tasks, _dispatched
    reported: set[int] = set()
    while True:
        start()
        if not _running:
            break
        worker = forks.wait_any([worker for worker, _ in _running.values()])
        _, first = _running.pop(worker.pid)
        for index, paths in worker.result if worker.result is not forks.FAILED else []:
            reported.add(first + index)
            drawing = _tasks[first + index][0]
            if isinstance(paths, list) and all(isinstance(path, str) for path in paths):
                drawing.paths = [Path(path) for path in paths]
            else:
                drawing.failed = True
    drawings = [drawing for drawing, _, _ in _tasks]
    for index, drawing in enumerate(drawings):
        drawing.failed = drawing.failed or index not in reported  # a worker that died took its tasks along
    _tasks, _dispatched = [], 0
    return drawings


def figure_formats(listed: str) -> tuple[str, ...]:
    """The formats a comma-separated list names, PNG first and always (the report's Markdown links it);
    `BenchError` naming any format not known."""
    named = [item.strip().lower() for item in listed.split(",") if item.strip()]
    unknown = [kind for kind in named if kind not in FORMATS]
    if unknown:
        raise BenchError(f"figure format(s) {', '.join(unknown)} not known; accepted: {', '.join(FORMATS)} "
                         f"({FORMATS[0]} is always written)")
    return tuple(dict.fromkeys((FORMATS[0], *named)))


@contextmanager
def drawing(workers: int | None = None, formats: tuple[str, ...] = DEFAULT_FORMATS) -> Iterator[None]:
    """Within the block, `draw` queues figure functions for up to `workers` forked workers (default: the
    cores this process may use) and `save` writes `formats` (see `figure_formats`); leaving it waits for
    the workers (`finish`) and raises `BenchError` naming any figure function that failed."""
    workers = available_cores() if workers is None else workers
    global _in_block, _workers, _formats
    if _in_block:
        raise BenchError("figure_saves.drawing blocks do not nest")
    _in_block, _workers, _formats = True, workers if forks.forks_available() else 1, formats
    drawn: list[Drawing] = []
    try:
        yield
    except BaseException:
        del _tasks[_dispatched:]  # after an error nothing new starts; the running workers are waited for
        raise
    finally:
        drawn = finish()
        _in_block, _workers, _formats = False, 1, DEFAULT_FORMATS
    failed = sorted(drawing.name for drawing in drawn if drawing.failed)
    if failed:
        raise BenchError(f"figure(s) {', '.join(failed)} could not be drawn (traceback above); the tables and "
                         "the other figures were written")
