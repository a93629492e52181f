"""Name -> constructor registries (open_lth style: plain dicts filled by the plugins).

A plugin registers itself with a decorator, `@METHODS.register("snip")`; lookups of unknown names
raise `UnknownNameError` listing every accepted name. A registry may also take a *pattern* resolver
for families of names such as `resnet{6n+2}`. A registry with a `plugin_group` also holds the entries
that installed packages register through that entry-point group (`bench.plugins`), loaded on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bench.errors import DuplicateNameError, UnknownNameError
from bench.plugins import load_entry_points

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries with a decorator to fill it and a helpful error on a miss."""

    def __init__(self, kind: str, plugin_group: str | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._patterns: list[tuple[str, Callable[[str], T | None]]] = []
        self._plugin_group = plugin_group

    def _load_plugins(self) -> None:
        """Import the entry points of the registry's group once (they register into it)."""
        if self._plugin_group is not None:
            group, self._plugin_group = self._plugin_group, None
            load_entry_points(group)

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise DuplicateNameError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def register_pattern(self, description: str, resolve: Callable[[str], T | None]) -> None:
        """Accept names that `resolve` maps to an entry (it returns None for names it does not take)."""
        self._patterns.append((description, resolve))

    def get(self, name: str) -> T:
        self._load_plugins()
        if name in self._entries:
            return self._entries[name]
        for _, resolve in self._patterns:
            entry = resolve(name)
            if entry is not None:
                return entry
        raise UnknownNameError(self.kind, name, self.accepted())

    def accepted(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries) + [description for description, _ in self._patterns]

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        self._load_plugins()
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(self._entries)
