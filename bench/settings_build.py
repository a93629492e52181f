"""A settings dataclass from a job's or the command line's overrides, each value checked and converted.

`build_settings(Settings, {"iterations": "10"}, owner)` is `Settings(iterations=10)`: names are checked
against the dataclass's fields, values converted to their field's type (booleans, integers, finite
floats, tuples) and kept within the field's `minimum`/`maximum` metadata (integers >= 0 where unset);
anything else is one `BenchError` line naming the bad value and the accepted ones. Grids, `--set`, the
dry-run cost, the preflight checks, `bench.api` and every job build a method's settings through it.
"""

from __future__ import annotations

import math
import typing
from dataclasses import fields
from typing import Any

from bench.errors import BenchError


def build_settings(settings_class: type, overrides: dict[str, Any], owner: str) -> Any:
    """`settings_class(**overrides)` with a one-line error for unknown names, wrong types, non-finite
    numbers and numbers outside their field's `minimum`/`maximum` (metadata; integers >= 0 where unset)."""
    known = {item.name: item for item in fields(settings_class)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise BenchError(f"unknown setting(s) {unknown} for {owner}; accepted: {sorted(known) or 'none'}")
    hints = typing.get_type_hints(settings_class)
    converted = {name: _convert(value, hints[name], f"{owner} setting {name}") for name, value in overrides.items()}
    for name, value in converted.items():  # bounds of the field's metadata; counts are >= 0 by default
        metadata = known[name].metadata
        minimum, maximum = metadata.get("minimum", 0 if hints[name] is int else None), metadata.get("maximum")
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            if (minimum is not None and item < minimum) or (maximum is not None and item > maximum):
                bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
                raise BenchError(f"{owner} setting {name} = {value!r}; accepted: numbers {bounds}")
    return settings_class(**converted)


def _convert(value: Any, hint: Any, what: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise BenchError(f"{what} = {value!r} is not a boolean; accepted: true, false")
    if hint is int and isinstance(value, bool | float):
        raise BenchError(f"{what} = {value!r} is not an integer; accepted: a whole number such as {int(value)}")
    if hint in (int, float):
        try:
            number = hint(value)
        except (TypeError, ValueError, OverflowError):
            raise BenchError(f"{what} = {value!r} is not a {hint.__name__}") from None
        if not math.isfinite(number):
            raise BenchError(f"{what} = {value!r} is not finite; accepted: a finite {hint.__name__}")
        return number
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise BenchError(f"{what} = {value!r} is not a list; accepted: a list such as [{value!r}]")
        arguments = typing.get_args(hint)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_convert(item, arguments[0], what) for item in value)
        return tuple(value)
    return value
