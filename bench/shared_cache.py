"""Results that several jobs share (e.g. IMC's pretraining and Hessian analysis), computed once.

A stage lives in `<root>/<name>-<hash>/`, the hash being a sha256 prefix of the canonical JSON of its
key (open_lth's rule: the folder name is derived from what determines the result). The folder holds
`key.json` (the key, for people), `result.pt` (written atomically with a checksum and read back with
`weights_only=True`, `bench.atomic`: a result that fails either check is set aside as
`result.pt.corrupt` and recomputed, and the job's log says so) and `lock`. The
first job to need a stage takes an exclusive `fcntl.flock` on `lock`, computes, writes and releases;
a job that arrives meanwhile blocks on the lock and then loads the finished file, so two jobs started
at once never both compute it. The kernel drops the lock when its holder dies, so a crashed job never
leaves a stale lock behind (the next job recomputes, resuming from whatever checkpoints `compute` left
in the folder). flock is advisory and needs a file system that supports it (local disks, and NFS v4 /
Lustre / GPFS as usually mounted on clusters).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.atomic import CorruptFileError, load_checked, save_checked, write_json

HASH_LENGTH = 12
RESULT_FILE = "result.pt"


def key_digest(key: dict[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def stage_folder(root: Path, name: str, key: dict[str, Any]) -> Path:
    return Path(root) / f"{name}-{key_digest(key)}"


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the enclosed block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass
class Stage:
    """A shared result, where it lives, and whether this process computed it."""

    value: Any
    folder: Path
    computed_here: bool


def cached_stage(root: Path, name: str, key: dict[str, Any], compute: Callable[[Path], Any]) -> Stage:
    """The stage's stored result, or `compute(folder)` under the stage's lock, stored atomically."""
    folder = stage_folder(root, name, key)
    result = folder / RESULT_FILE
    value = _load_result(result)
    if value is not None:
        return Stage(value, folder, False)
    with exclusive(folder / "lock"):
        value = _load_result(result)  # somebody may have finished it while we waited
        if value is not None:
            return Stage(value, folder, False)
        write_json(folder / "key.json", key)
        save_checked(result, compute(folder))
        return Stage(load_checked(result), folder, True)


def _load_result(result: Path) -> Any:
    """The stored result, or None if there is none or it is corrupt (set aside, to be recomputed)."""
    if not result.exists():
        return None
    try:
        return load_checked(result)
    except CorruptFileError as error:
        try:
            result.replace(result.with_name(result.name + ".corrupt"))
        except FileNotFoundError:  # another job set it aside first
            pass
        print(f"warning: {error}; set aside as {result.name}.corrupt, recomputing the stage", file=sys.stderr,
              flush=True)
        return None
