"""Stages: work that several jobs share, computed once and cached under the results folder.

A stage (the dense trajectory of a recipe, Continuous Sparsification's search, IMC's pretraining and
spectrum analysis) is a `StageSpec`: a name, a key (the canonical JSON of exactly what determines its
result) and a code version that its owner bumps when the computation changes, so that a fix never
silently reuses old results. It lives in `<results>/stages/<name>-<hash>/`, the hash being a sha256
prefix of name, version and key (open_lth's rule: the folder name is derived from what determines the
result). The folder holds `key.json` (for people), `result.pt` (written atomically, `bench.atomic`),
`lock`, and whatever the computation keeps there to resume (`ckpt/`, `epochs.csv`, snapshots).

`obtain(results, spec, compute)`: a job that finds `result.pt` loads it; otherwise it takes an
exclusive `fcntl.flock` on `lock`, computes `compute(folder)`, writes the result and releases. A job
that arrives meanwhile blocks on the lock, then loads the finished file, so two jobs started at once
never both compute it. The kernel drops the lock when its holder dies, so a crashed job leaves no
stale lock (the next job recomputes, resuming from the checkpoints `compute` left in the folder).
flock is advisory and needs a file system that supports it (local disks, and NFS v4 / Lustre / GPFS
as usually mounted on clusters). A job that finds the lock held says so in one line before it waits;
inside `deferring_held_stages()` (a `local` pool's worker) it raises `StageHeld` instead, and the pool
runs another job on that worker until the stage is computed (`stage_is_held`).

Nothing in a stage folder is followed out of the results folder (`bench.safe_paths`): the folder, or
a link inside it (a dangling `epochs.csv` too), that leads out fails the job that needs the stage,
naming the link. A `result.pt` that fails its checksum, is not a stage's value (a dict with
`seconds`) or is not a file is set aside as `result.pt.corrupt` and the stage is computed again.

A stage's value is a dict of tensors, plain containers and numbers (loadable with
`bench.atomic.load_checked`, i.e. `torch.load(weights_only=True)`) with an entry `seconds`: the compute time that every job using the
stage counts in its runtime, whether it computed the stage or loaded it.

Requests: a consumer may ask a stage to keep extras that do not change its value (the dense
trajectory's snapshot epochs). They are not part of the key, so the folder does not depend on who
asks: `request(results, spec, epochs)` adds them to `requests.json` (executors do this for the whole
plan before any job runs, and every job again for its own), and the computation reads
`requested(folder)` when it starts. An extra asked for after the stage was computed is the owner's to
produce later (the trajectory replays the prefix from the init, see `bench.trajectory`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.atomic import CorruptFileError, file_mode, load_checked, read_json, save_checked, write_json
from bench.safe_paths import check_tree, open_no_follow

if TYPE_CHECKING:
    from bench.spec import JobSpec
    from bench.train import TrainSettings

STAGES_FOLDER = "stages"
HASH_LENGTH = 12
RESULT_FILE = "result.pt"
REQUESTS_FILE = "requests.json"
COMPUTED, LOADED = "computed", "loaded"


@dataclass(frozen=True)
class StageSpec:
    """What identifies a stage: its name, what determines its result, and its code version."""

    name: str
    key: dict[str, Any]
    version: int = 1

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "key": self.key}

    def digest(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]

    @property
    def label(self) -> str:
        """`<name>-<hash>`: the stage's folder name, unique per stage (the cost estimate counts by it)."""
        return f"{self.name}-{self.digest()}"

    def folder(self, results: Path) -> Path:
        return Path(results) / STAGES_FOLDER / self.label


def recipe_key(spec: JobSpec, recipe: TrainSettings) -> dict[str, Any]:
    """The part of a stage key that every per-trial stage has: dataset, arch, trial, the recipe, and the
    job's image size where it is not the dataset's own (absent at the default, so keys stay).

    Every recipe field is in the key, so a field added to `TrainSettings` from now on must be left out at
    its default, as `image_size` is, or every stage folder already computed is computed again (the folder
    names are pinned in tests/test_stages.py). `compile` entered the key at its default when it was added,
    which renamed the stages of results folders made before it."""
    key = {"dataset": spec.dataset, "arch": spec.arch, "trial": spec.trial, "recipe": asdict(recipe)}
    if spec.image_size is not None:
        key["image_size"] = spec.image_size
    return key


class StageHeld(Exception):
    """Raised, inside `deferring_held_stages()`, by a job that needs a stage another process is computing."""

    def __init__(self, folder: Path):
        super().__init__(f"stage {Path(folder).name} is being computed by another process")
        self.folder = Path(folder)


_defer_held = False


@contextmanager
def deferring_held_stages() -> Iterator[None]:
    """Within the block, `obtain` raises `StageHeld` where it would wait for another process's computation."""
    global _defer_held
    previous, _defer_held = _defer_held, True
    try:
        yield
    finally:
        _defer_held = previous


def stage_is_held(folder: Path) -> bool:
    """Whether a process is computing the stage in `folder` now (holds its lock)."""
    lock = Path(folder) / "lock"
    if not lock.is_file() or lock.is_symlink():
        return False
    with open(open_no_follow(lock, os.O_RDONLY)) as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


@dataclass(frozen=True)
class StageNeed:
    """A stage a job needs, and the extras (snapshot epochs) it asks the stage to keep."""

    stage: StageSpec
    requests: tuple[int, ...] = field(default=())


@dataclass
class StageResult:
    """A stage's value, where it lives, and whether this process computed it."""

    value: dict[str, Any]
    folder: Path
    computed_here: bool


@contextmanager
def exclusive(path: Path, waiting: str = "", held: Exception | None = None) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing, never through a link) for the enclosed
    block; if another process holds it, raise `held` (when given), else print `waiting` (when given) once
    and wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, file_mode()), "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if held is not None:
                raise held from None
            if waiting:
                print(waiting, file=sys.stderr, flush=True)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def stage_lock(folder: Path):
    """The lock that guards a stage folder's computation (also for its owner's later additions); held
    elsewhere, it waits, or raises `StageHeld` inside `deferring_held_stages()`."""
    return exclusive(Path(folder) / "lock", f"waiting for stage {Path(folder).name}: another process is computing "
                                            f"it (lock {Path(folder) / 'lock'})", StageHeld(folder) if _defer_held else None)


def load_value(path: Path, check: Callable[[Any], bool] = lambda value: True) -> Any:
    """A stage file (checksum verified, `weights_only=True`, and `check(value)` true), or None if it is
    missing or corrupt.

    A corrupt file (a folder, a link, the wrong shape included) is set aside as `<name>.corrupt`, so that
    the stage recomputes it.
    """
    if not path.exists() and not path.is_symlink():
        return None
    try:
        value = load_checked(path)
        if not check(value):
            raise CorruptFileError(f"{path} holds a {type(value).__name__} of the wrong shape")
        return value
    except CorruptFileError as error:
        try:
            path.replace(path.with_name(path.name + ".corrupt"))
        except FileNotFoundError:  # another job set it aside first
            pass
        print(f"warning: {error}; set aside as {path.name}.corrupt, recomputing the stage", file=sys.stderr,
              flush=True)
        return None


def obtain(results: Path, spec: StageSpec, compute: Callable[[Path], dict[str, Any]]) -> StageResult:
    """The stage's stored value, or `compute(folder)` under the stage's lock, stored atomically."""
    folder = spec.folder(results)
    check_tree(folder, results)
    result = folder / RESULT_FILE
    value = load_value(result, is_stage_value)
    if value is not None:
        return StageResult(value, folder, False)
    with stage_lock(folder):
        value = load_value(result, is_stage_value)  # somebody may have finished it while we waited
        if value is not None:
            return StageResult(value, folder, False)
        write_json(folder / "key.json", spec.identity())
        value = compute(folder)
        if "seconds" not in value:
            raise ValueError(f"stage {spec.name} returned no 'seconds' (its compute time)")
        save_checked(result, value)
        return StageResult(load_checked(result), folder, True)


def is_stage_value(value: Any) -> bool:
    """Whether `value` has a stage value's shape: a dict with its compute time `seconds`."""
    return isinstance(value, dict) and isinstance(value.get("seconds"), int | float)


def request(results: Path, spec: StageSpec, items: Iterable[int]) -> None:
    """Ask the stage to keep `items` (e.g. snapshot epochs) when it is computed; kept with earlier asks."""
    items = set(items)
    if not items:
        return
    folder = spec.folder(results)
    with exclusive(folder / "requests.lock"):
        known = set(requested(folder))
        if not items <= known:
            write_json(folder / REQUESTS_FILE, sorted(known | items))


def requested(folder: Path) -> list[int]:
    """What the stage's consumers asked it to keep so far."""
    path = Path(folder) / REQUESTS_FILE
    try:
        asked = read_json(path) if path.exists() else []
    except CorruptFileError:
        asked = None
    if not isinstance(asked, list) or not all(isinstance(item, int) for item in asked):
        print(f"warning: {path} is not a list of epochs; ignored (the stage keeps what its jobs ask again)",
              file=sys.stderr, flush=True)
        return []
    return asked
