"""Running a function in a forked child process and getting its result back, for the report's parallel work.

The report's work is pure Python (reading tens of thousands of small files, matplotlib), so threads do
not help it; forked children do, and they start with the parent's data in place, nothing pickled. A
child runs `function(*arguments)`, sends the result back as JSON over a pipe (data only: nothing that
crosses it can run code in the parent) and exits without running the parent's exit handlers. The parent
reads the pipes of all its running children at once (`wait_any`), so a child never blocks on a full pipe.

Forking is used on Linux only (`forks_available()`; macOS's system libraries are not safe to use after a
fork); elsewhere callers run the work in this process. It does not ask `multiprocessing` for its default
start method, which Python 3.14 changes to forkserver on Linux too: the report starts no threads and
imports no torch, and its children only read files and draw with matplotlib's Agg, which is safe
after a fork whatever that default.
"""

from __future__ import annotations

import json
import os
import select
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

FAILED = object()
"""The result of a child that raised, exited non-zero or sent no JSON (its traceback is on stderr)."""


@dataclass
class Child:
    """A forked child running one function; `result` is set once `wait_any` has returned it."""

    pid: int
    reader: int
    received: bytearray = field(default_factory=bytearray)
    result: Any = None


def forks_available() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def start(function: Callable[..., Any], *arguments, siblings: Sequence[Child] = ()) -> Child:
    """Fork a child that runs `function(*arguments)` and sends back its JSON-able result. `siblings`:
    the caller's other running children, whose pipes the new child closes (they are the parent's to read)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(reader)
            for sibling in siblings:
                os.close(sibling.reader)
            data = json.dumps(function(*arguments)).encode()
            while data:
                data = data[os.write(writer, data):]
        except BaseException:  # noqa: BLE001 - reported to the parent by the exit code
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(writer)
    return Child(pid, reader)


def wait_any(children: Sequence[Child]) -> Child:
    """Read what the running `children` send until one has finished; that one, its `result` set (`FAILED`
    where it failed). The others keep what they sent so far."""
    by_reader = {child.reader: child for child in children}
    while True:
        ready, _, _ = select.select(list(by_reader), [], [])
        for reader in ready:
            child = by_reader[reader]
            chunk = os.read(reader, 1 << 20)
            if chunk:
                child.received += chunk
                continue
            os.close(reader)
            _, status = os.waitpid(child.pid, 0)
            try:
                child.result = json.loads(child.received) if os.waitstatus_to_exitcode(status) == 0 else FAILED
            except ValueError:
                child.result = FAILED
            child.received = bytearray()
            return child


def split_map(function: Callable[[list], list], items: list, parts: int) -> list:
    """`function(items)` computed in up to `parts` chunks at once: all but the first in forked children,
    the first here; the results concatenated in order. Falls back to one call here where forking is not
    available, `parts` < 2 or the items are few. `function` maps a list to a list of JSON-able values."""
    if parts < 2 or len(items) < 2 * parts or not forks_available():
        return function(items)
    size = -(-len(items) // parts)
    chunks = [items[index:index + size] for index in range(0, len(items), size)]
    children: list[Child] = []
    for chunk in chunks[1:]:
        children.append(start(function, chunk, siblings=children))
    results = {0: function(chunks[0])}
    running = list(children)
    while running:
        finished = wait_any(running)
        running.remove(finished)
        if finished.result is FAILED:
            for child in running:  # no orphan is left reading folders after the error
                os.kill(child.pid, 9)
                os.waitpid(child.pid, 0)
                os.close(child.reader)
            raise RuntimeError(f"a forked child of {function.__name__} failed (traceback above)")
        results[children.index(finished) + 1] = finished.result
    return [value for index in range(len(chunks)) for value in results[index]]
