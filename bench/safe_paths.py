"""Paths under a results folder that never lead out of it: containment checks and no-follow opens.

A results folder may come from someone else (a colleague's run, an archive), so a link planted in it
must never make prunebench write, truncate or read a file elsewhere. Three primitives, used by every
module that touches a results folder:

- `check_inside(path, root)`: the path, every link on the way resolved, stays under `root`; a link
  that leads out raises `LinkOutError` naming it (before anything is written there).
- `check_tree(folder, root)`: `check_inside` for the folder and for every link inside it (a dangling
  link counts: an append through it would create its target).
- `open_no_follow(path, flags)`: `os.open` with `O_NOFOLLOW`, for the files opened in place (locks,
  appended logs, reads); a link at `path` raises `LinkOutError` instead of being followed.

Whole-file writes go through `bench.atomic.atomic_write`, which renames a new file over the path and
so replaces a link there instead of writing through it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from bench.errors import BenchError

LINK_HELP = "accepted: plain files and folders (remove the link)"


class LinkOutError(BenchError):
    """A link under a results folder that leads out of it: nothing is written or read through it."""


def check_inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """`path` resolved (links followed, dangling ones too); `LinkOutError` if that is outside `root`."""
    path, root = Path(path), Path(root)
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise LinkOutError(f"{path} leads through a link to {resolved}, outside {root}; {LINK_HELP}")
    return resolved


def check_tree(folder: str | os.PathLike, root: str | os.PathLike) -> None:
    """`folder` and every link inside it stay under `root` (links inside lead nowhere outside `folder`)."""
    folder = Path(folder)
    check_inside(folder, root)
    if not folder.is_dir():
        return
    for parent, directories, files in os.walk(folder):
        for name in directories + files:
            path = Path(parent) / name
            if path.is_symlink():
                check_inside(path, folder)


def open_no_follow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """`os.open(path, flags | O_NOFOLLOW | O_CLOEXEC)`; a link at `path` raises `LinkOutError`."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LinkOutError(f"{path} is a link (to {Path(path).resolve()}); prunebench does not open "
                               f"files through links; {LINK_HELP}") from None
        raise


def read_bytes_no_follow(path: str | os.PathLike) -> bytes:
    """The bytes of the plain file at `path`; a link raises `LinkOutError`, a folder `IsADirectoryError`."""
    descriptor = open_no_follow(path, os.O_RDONLY)
    try:  # plain reads of the descriptor: a report reads tens of thousands of small files
        chunks = []
        while chunk := os.read(descriptor, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)
