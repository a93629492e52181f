"""Atomic, checked writes and safe reads of the files in a results folder.

- Every write goes to a temporary file in the same folder, is fsynced and renamed over the target: a
  reader never sees half a file, and a crash never destroys the previous version of a finished result.
  The file gets the permissions the user's umask gives (results live on shared file systems, where
  collaborators must read them), not the 0600 of a temporary file.
- Tensor files (checkpoints, snapshots, shared stages, the dataset cache) are written by `save_checked`:
  a header line with the sha256 of the payload, then `torch.save`'s bytes. `load_checked` verifies the
  checksum and unpickles with `torch.load(weights_only=True)`, which builds only tensors, plain
  containers and numbers (plus the classes a caller allow-lists), so a file crafted by someone else
  cannot run code when a job resumes. A file that fails either check raises `CorruptFileError`
  naming the file.
- Reads never follow a link (`bench.safe_paths`): a link, a folder or an unreadable entry where a file
  is expected is a `CorruptFileError` naming it, like a torn file; a write renames over a link at its
  path instead of writing through it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from bench.errors import BenchError
from bench.safe_paths import LinkOutError, read_bytes_no_follow

CHECKED_MAGIC = b"prunebench-sha256 "
DIGEST_LENGTH = 64


def file_mode() -> int:
    """The mode a new file gets under the user's umask (0666 minus the umask)."""
    current = os.umask(0o022)
    os.umask(current)
    return 0o666 & ~current


class CorruptFileError(BenchError):
    """A results-folder file that cannot be read back: torn, edited, or holding more than data."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary binary file beside `path`, fsync it, then rename it onto `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, file_mode())
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def write_json(path: str | os.PathLike, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of the plain file at `path`, never through a link; a link, a folder or an unreadable
    entry raises `CorruptFileError` naming it (a missing file raises `FileNotFoundError`)."""
    try:
        return read_bytes_no_follow(path)
    except LinkOutError as error:
        raise CorruptFileError(str(error)) from None
    except (IsADirectoryError, PermissionError) as error:
        raise CorruptFileError(f"{path} cannot be read as a file ({error.strerror}); accepted: a plain file "
                               "written by prunebench") from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in `path`; a file that is not JSON (or not a plain file) raises `CorruptFileError` naming it."""
    try:
        return json.loads(read_file(path).decode())
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{path} is not valid JSON ({error}); delete it or restore it") from None


def read_shaped(path: str | os.PathLike, expected: type, what: str) -> Any:
    """`read_json(path)`, which must be of type `expected` (described as `what`), else `CorruptFileError`."""
    value = read_json(path)
    if not isinstance(value, expected):
        raise CorruptFileError(f"{path} holds a {type(value).__name__}, not {what} (wrong shape); delete it or "
                               "restore it")
    return value


def torch_save(path: str | os.PathLike, value: Any) -> None:
    import torch

    atomic_write(path, lambda handle: torch.save(value, handle))


def save_checked(path: str | os.PathLike, value: Any) -> None:
    """`torch.save(value)` behind a sha256 header line, written atomically."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    payload = buffer.getvalue()
    header = CHECKED_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"

    def write(handle: IO[bytes]) -> None:
        handle.write(header)
        handle.write(payload)

    atomic_write(path, write)


def load_checked(path: str | os.PathLike, map_location: Any = "cpu", safe_types: Iterable[type] = ()) -> Any:
    """What `save_checked` wrote to `path`, checksum verified, unpickled with `weights_only=True`.

    `safe_types` are the classes besides tensors, containers and numbers that the file may hold. A
    file without the header (written before checksums) is still loaded with `weights_only=True`.
    """
    import torch

    raw = read_file(path)
    if raw.startswith(CHECKED_MAGIC):
        start = len(CHECKED_MAGIC)
        digest, payload = raw[start:start + DIGEST_LENGTH].decode(errors="replace"), raw[start + DIGEST_LENGTH + 1:]
        if hashlib.sha256(payload).hexdigest() != digest:
            raise CorruptFileError(f"{path} fails its checksum (torn or modified)")
    else:
        payload = raw
    try:
        with torch.serialization.safe_globals(list(safe_types)):
            return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as error:  # any unpickling failure means: not data we wrote
        text = str(error)
        found = re.search(r"(?:WeightsUnpickler error: |Trying to load )([^\n]*)", text)
        if "Weights only load failed" in text:
            why = found.group(1).strip() if found and found.group(1).strip() else "not a torch tensor file"
        else:
            why = f"{type(error).__name__}: {text.strip().splitlines()[0][:120] if text.strip() else ''}"
        raise CorruptFileError(f"{path} is torn or holds more than tensors and numbers ({why.strip()})") from None
