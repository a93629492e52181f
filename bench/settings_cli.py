"""Settings from the command line: `--set KEY=VALUE` onto a grid, and `--describe NAME`.

Keys are spelled as `--filter` spells them (open_lth's habit of typed settings reachable from the
command line, without writing a TOML grid):
  train.<field>              the training recipe (`bench.train.TrainSettings`), e.g. train.lr=0.05
  hparams.<setting>          that setting of every method of the grid that has it, e.g. hparams.iterations=10
  hparams.<method>.<setting> one method's setting, e.g. hparams.imc-reinit.slq_runs=4
A value is read as a TOML literal (10, 0.05, true, [0.5, 0.75]); a bare word stays a string and
`a,b` is a list. Each value is checked against its settings dataclass (type and `__post_init__`) before
any job is planned; an unknown key or a bad value is one `BenchError` line listing what is accepted.
`--describe` prints a settings dataclass (a method's, `train`, or a dataset's data settings) with its
defaults and the help text its fields carry.
"""

from __future__ import annotations

import tomllib
import typing
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

from bench.errors import BenchError
from bench.grid import Grid

TRAIN, HPARAMS = "train", "hparams"


@dataclass(frozen=True)
class Assignment:
    """One `--set`: section (train | hparams), the method (None: every method having the setting), name, value."""

    section: str
    method: str | None
    name: str
    value: Any


def parse_value(text: str) -> Any:
    """'0.05' -> 0.05, 'true' -> True, '[0.5, 0.75]' or '0.5,0.75' -> a list, 'loss_based' -> the string."""
    text = text.strip()
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        pass
    if "," in text:
        return [parse_value(part) for part in text.split(",") if part.strip()]
    return text


def _field_names(settings_class: type) -> list[str]:
    return [item.name for item in fields(settings_class)]


def _checked(settings_class: type, name: str, value: Any, owner: str) -> Any:
    """The value as its dataclass stores it (type converted, `__post_init__` passed)."""
    from bench.settings_build import build_settings

    try:
        return getattr(build_settings(settings_class, {name: value}, owner), name)
    except BenchError as error:
        kind = typing.get_type_hints(settings_class)[name]
        raise BenchError(f"--set {owner} {name}={value!r}: {error}; accepted: a value of type "
                         f"{getattr(kind, '__name__', kind)}") from None


def _accepted_keys(method_names: list[str]) -> str:
    from bench.train import TrainSettings
    from methods.registry import get_method

    keys = [f"train.{name}" for name in _field_names(TrainSettings)]
    shared = sorted({name for method in method_names for name in _field_names(get_method(method).Settings)})
    keys += [f"hparams.{name}" for name in shared]
    return ", ".join(keys) + ", hparams.<method>.<setting>"


def parse_assignments(items: list[str] | None, method_names: list[str]) -> list[Assignment]:
    """Parse and check every `--set KEY=VALUE` against the settings of `method_names` (the grid's)."""
    from bench.train import TrainSettings
    from methods.registry import get_method

    assignments = []
    for item in items or []:
        if any(character in item for character in "\n\r\0"):
            raise BenchError(f"--set {item!r} holds a line break or NUL; accepted: KEY=VALUE on one line")
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not text.strip() or parts[0] not in (TRAIN, HPARAMS) or len(parts) not in (2, 3) \
                or (parts[0] == TRAIN and len(parts) != 2):
            raise BenchError(f"--set {item!r} is not KEY=VALUE with a known key; accepted: {_accepted_keys(method_names)}")
        value = parse_value(text)
        if parts[0] == TRAIN:
            if parts[1] not in _field_names(TrainSettings):
                raise BenchError(f"unknown --set key {key!r}; accepted: {_accepted_keys(method_names)}")
            value = _checked(TrainSettings, parts[1], value, "training")
            assignments.append(Assignment(TRAIN, None, parts[1], value))
        elif len(parts) == 3:
            method, name = parts[1], parts[2]
            settings_class = get_method(method).Settings  # an unknown method: one line naming the accepted ones
            if name not in _field_names(settings_class):
                raise BenchError(f"unknown --set key {key!r}; accepted for {method}: "
                                 f"{', '.join(f'hparams.{method}.{field}' for field in _field_names(settings_class)) or 'none'}")
            assignments.append(Assignment(HPARAMS, method, name, _checked(settings_class, name, value, f"method {method}")))
        else:
            name = parts[1]
            having = [method for method in method_names if name in _field_names(get_method(method).Settings)]
            if not having:
                raise BenchError(f"unknown --set key {key!r}: no method of the grid has setting {name!r}; "
                                 f"accepted: {_accepted_keys(method_names)}")
            for method in having:  # check the value against every method that will get it
                value = _checked(get_method(method).Settings, name, value, f"method {method}")
            assignments.append(Assignment(HPARAMS, None, name, value))
    return assignments


def grid_methods(grid: Grid) -> list[str]:
    return list(dict.fromkeys(method for part in grid.parts for method in part.method_list()))


def apply_assignments(grid: Grid, assignments: list[Assignment]) -> Grid:
    """The grid with every assignment set in every part (after the grid's own settings, so it wins)."""
    from methods.registry import get_method

    parts = []
    for part in grid.parts:
        train = dict(part.train)
        hparams = {method: dict(values) for method, values in part.hparams.items()}
        for assignment in assignments:
            if assignment.section == TRAIN:
                train[assignment.name] = assignment.value
                continue
            targets = [assignment.method] if assignment.method else [
                method for method in part.method_list()
                if assignment.name in _field_names(get_method(method).Settings)]
            for method in targets:
                hparams.setdefault(method, {})[assignment.name] = assignment.value
        parts.append(replace(part, train=train, hparams=hparams))
    return replace(grid, parts=tuple(parts))


def describe(name: str) -> str:
    """The settings of a method, of `train`, or of a dataset, with defaults and help, as text."""
    from bench.data import DATASETS, DataSettings, parse_dataset_name
    from bench.paper import PAPER_NAMES
    from bench.train import TrainSettings
    from methods.registry import get_method, method_names

    if name == TRAIN:
        return _settings_text("train: the training recipe (one full run); set with --set train.<field>=VALUE "
                              "(--epochs N is train.epochs)", TrainSettings, "train.")
    if name in method_names():
        method_class = get_method(name)
        doc = (method_class.__doc__ or "").strip().splitlines()
        traits = [f"takes a requested sparsity: {'yes' if method_class.takes_sparsity else 'no'}",
                  f"finds its own sparsity: {'yes' if method_class.finds_sparsity else 'no'}"]
        if method_class.quick_hparams:
            traits.append("quick settings (grids with quick = true): "
                          + ", ".join(f"{key}={value}" for key, value in method_class.quick_hparams.items()))
        paper_name = PAPER_NAMES.get(name, "not in the paper")
        header = f"{name} ({paper_name}; {method_class.__module__}): {doc[0] if doc else method_class.__name__}\n" \
            + "\n".join(f"  {trait}" for trait in traits)
        return _settings_text(header, method_class.Settings, f"hparams.{name}.")
    try:
        base, count = parse_dataset_name(name)
        DATASETS.get(base)
    except BenchError:
        base = None
    if base is not None:
        subset = f"a class-stratified, seeded subset of {count:,} training images of {base} (test set whole)" \
            if count else f"the whole {base} dataset"
        header = f"dataset {name}: {subset}\n  data settings (where the data is, not part of a job's id; " \
                 "flags: --data-root, --download, --cache-dir):"
        return _settings_text(header, DataSettings, "")
    accepted = ["train", *method_names(), *DATASETS.accepted(), "NAME@Nk"]
    raise BenchError(f"nothing to describe named {name!r}; accepted: {', '.join(accepted)}")


def _settings_text(header: str, settings_class: type, prefix: str) -> str:
    items = fields(settings_class)
    if not items:
        return f"{header}\n  no settings of its own"
    hints = typing.get_type_hints(settings_class)
    rows = []
    for item in items:
        default = item.default_factory() if item.default_factory is not MISSING else item.default
        kind = getattr(hints[item.name], "__name__", str(hints[item.name]))
        rows.append((f"{prefix}{item.name}", kind, repr(default), item.metadata.get("help", "")))
    width = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [header]
    for key, kind, default, help_text in rows:
        lines.append(f"  {key:{width[0]}}  {kind:{width[1]}}  {default:{width[2]}}  {help_text}".rstrip())
    return "\n".join(lines)
