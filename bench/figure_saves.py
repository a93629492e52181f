"""Drawing a report's figures several at once, each figure function in a forked process, in the formats asked for.

Building and rendering a figure is most of a report's fixed cost: matplotlib spends it in pure Python,
one core at a time, and a report draws the same figures for 30 jobs as for 10,000. Inside
`drawing(workers, formats)`, `draw(function, *arguments)` runs a figure function (one of
`bench.figures`: it builds its figures and saves them with `save`) in a forked child while the report
goes on with its tables; at most `workers` children run at once, and the queued ones start as workers
free up. The child (`bench.forks`) sends back the paths it wrote as JSON and exits; `finish`, and
leaving the block, wait for all of them. A child that fails is named in one `BenchError` after the
others finished; its files are written atomically (`bench.atomic`), so none is left half-written.

Forking is used only where it is the platform's default way to start processes (Linux); elsewhere, with
one worker, or outside the block, `draw` runs the function here and now. The returned `Drawing` holds
the paths once the block has ended (or at once when drawn here).

Formats: PNG by default (what the report's Markdown shows); `pdf` and `svg` on request, for papers. A
figure with a layout engine is laid out by its first save's own draw; the other formats keep those
positions.
"""

from __future__ import annotations

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


_children: dict[int, tuple[forks.Child, Drawing]] = {}  # pid -> child and its drawing, while a block runs
_drawings: list[Drawing] | None = None  # the current block's drawings, in the order asked for
_queue: list[tuple[Drawing, Callable[..., list[Path]], tuple]] = []  # asked for, not yet started
_workers = 1
_formats = DEFAULT_FORMATS


def figure_paths(folder: Path, name: str) -> list[Path]:
    return [folder / f"{name}.{kind}" for kind in _formats]


def save(figure, folder: Path, name: str) -> list[Path]:
    """Write `figure` as `name`.<format> in `folder` for each format of the current block, laid out once;
    the paths written. A figure without a layout engine is fitted to its tight bounding box in each save.
    Writes go through the atomic writer: a link at a figure's path is replaced, never written through."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = figure_paths(folder, name)
    fit = None if figure.get_layout_engine() is not None else "tight"
    for path in paths:
        atomic_write(path, lambda handle, kind=path.suffix[1:]: figure.savefig(handle, format=kind, dpi=DPI,
                                                                               bbox_inches=fit))
        figure.set_layout_engine("none")  # keep the positions the first save laid out
    return paths


def draw(function: Callable[..., list[Path]], *arguments, name: str | None = None) -> Drawing:
    """Run the figure function `function(*arguments)`: inside a `drawing` block with more than one worker, in
    a forked child (queued while `workers` children run; never waits), else here and now. Its `Drawing`
    has its paths once the block's `finish` has returned."""
    drawing = Drawing(name or " ".join([function.__name__, *(str(value) for value in arguments
                                                              if isinstance(value, str))]))
    if _drawings is None or _workers <= 1:
        drawing.paths = list(function(*arguments))
        return drawing
    _drawings.append(drawing)
    _queue.append((drawing, function, arguments))
    _reap(block=False)
    return drawing


def _start_queued() -> None:
    """Fork a child for each queued figure function while fewer than `workers` run."""
    while _queue and len(_children) < _workers:
        drawing, function, arguments = _queue.pop(0)
        child = forks.start(_drawn_here, function, arguments, siblings=[child for child, _ in _children.values()])
        _children[child.pid] = (child, drawing)


def _drawn_here(function: Callable[..., list[Path]], arguments: tuple) -> list[str]:
    """In a forked child: draw here (no queue, no children of its own); the paths written, as strings."""
    global _drawings
    _children.clear()
    _queue.clear()
    _drawings = None
    return [str(path) for path in function(*arguments)]


def _reap(block: bool) -> None:
    """Start queued figure functions where a worker is free; if `block`, wait for a child to finish and
    take its paths."""
    _start_queued()
    if not block or not _children:
        return
    finished = forks.wait_any([child for child, _ in _children.values()])
    _, drawing = _children.pop(finished.pid)
    if isinstance(finished.result, list) and all(isinstance(path, str) for path in finished.result):
        drawing.paths = [Path(path) for path in finished.result]
    else:
        drawing.failed = True


def finish() -> list[Drawing]:
    """Run every queued figure function and wait for all children of the current block; this block's
    drawings, their paths complete."""
    while _children or _queue:
        _reap(block=True)
    return list(_drawings or [])


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
    """Within the block, `draw` runs figure functions in up to `workers` forked children (default: the
    cores this process may use) and `save` writes `formats` (see `figure_formats`); leaving it waits for the children (`finish`)
    and raises `BenchError` naming any figure function that failed."""
    workers = available_cores() if workers is None else workers
    global _drawings, _workers, _formats
    if _drawings is not None:
        raise BenchError("figure_saves.drawing blocks do not nest")
    _drawings, _workers, _formats = [], workers if forks.forks_available() else 1, formats
    try:
        yield
    finally:
        drawn = finish()
        _drawings, _workers, _formats = None, 1, DEFAULT_FORMATS
    failed = sorted(drawing.name for drawing in drawn if drawing.failed)
    if failed:
        raise BenchError(f"figure(s) {', '.join(failed)} could not be drawn (traceback above); the tables and "
                         "the other figures were written")
