"""Declarative grids: `bench/grids/<name>.toml` (or any TOML path) expanded into a plan of jobs.

A grid file sets, at its top level and in optional `[[block]]` tables that override it:
  methods      a list of method names, or "all" (every registered method)
  datasets     e.g. ["cifar100", "cifar10@5k"]; archs, e.g. ["resnet20", "resnet32"]; trials (seeds)
  sparsities   requested sparsities: floats, "found" (IMC's s* of the same trial), "sweep" and "paper"
               (the s* the paper reports for IMC on the job's dataset and arch, `bench.paper`: an
               operating point at which every method that takes a sparsity runs, IMC's variants
               included, which then prune there with their own mask)
  sweep        [start, stop, step] of the "sweep" levels (inclusive), e.g. [0.05, 0.5, 0.05]
  [modes]      overrides of how a method takes sparsities, which its class declares (`sparsity_mode`):
               "levels" (one job per level), "rounds" (one iterative job whose rounds cover the levels:
               it gets the largest numeric level, or "found" alone), "none" (one job: dense, a method
               that finds its own sparsity)
  needs_analysis   methods whose jobs wait for `bench.found.analysis_spec(spec)` (IMC's variants;
               a method class can also say so, `Method.needs_analysis`); every job at sparsity "found"
               waits for it too. Analysis jobs are added to the plan.
  quick        true: start from each method's cheap `quick_hparams` (smoke runs, the offline default)
  ablations    sanity ablations (`bench.ablations`), e.g. ["none", "shuffle", "reinit", "invert"]: one job
               per method and ablation (default ["none"]); a method that does not take one is an error
  image_size   side length images are resized to (imagefolder, imagenet-sub; part of the job)
  [train]      training-recipe overrides; [hparams.<method>] per-method settings
  [vary]       a cartesian product of settings: {"train.lr" = [...], "hparams.rewind_epoch" = [...]}
               ("hparams.X" is set for every method of the block)
  extends      a grid whose keys this file starts from (files named `_*.toml` hold shared keys)
  include      grids whose jobs are part of this one (`full` = every paper grid)

Every key's type is checked when the file is read (a string where a list belongs, a scalar `[vary]`,
`quick = "yes"`, an `include` cycle are one-line errors naming the key), and a plan is bounded
(`MAX_PLAN_JOBS` jobs, `MAX_SWEEP_LEVELS` sweep levels) before it is expanded.
Method names are checked when the grid is expanded, not when it is read, so a grid may name methods
that another branch registers; an unknown name is a one-line `BenchError`. Settings are validated
against the method's `Settings` and dropped where they equal the default, so a job's id does not
change when a grid spells out a default (open_lth's rule). Jobs are deduplicated by id.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench import found
from bench.errors import BenchError, UnknownNameError, check_sparsity
from bench.spec import FOUND, JobSpec
from methods.registry import SPARSITY_MODES

GRIDS_DIR = Path(__file__).parent / "grids"
SWEEP = "sweep"
PAPER = "paper"
MODES = SPARSITY_MODES
PART_KEYS = {"methods", "datasets", "archs", "trials", "sparsities", "sweep", "modes", "needs_analysis",
             "quick", "train", "hparams", "vary", "name", "ablations", "image_size"}
FILE_KEYS = PART_KEYS | {"description", "extends", "include", "block"}
MAX_PLAN_JOBS = 20_000
MAX_SWEEP_LEVELS = 1_000
MAX_TRIALS = 1_000
NAME_LISTS = ("datasets", "archs", "needs_analysis", "ablations")
FILTER_KEYS = ("method", "dataset", "arch", "trial", "sparsity", "ablation", "image_size")


@dataclass(frozen=True)
class GridPart:
    """One cartesian block of a grid."""

    name: str = ""
    methods: tuple[str, ...] | str = "all"
    datasets: tuple[str, ...] = ("digits",)
    archs: tuple[str, ...] = ("resnet20",)
    trials: int = 1
    sparsities: tuple[float | str, ...] = (0.5,)
    sweep: tuple[float, float, float] = (0.05, 0.5, 0.05)
    modes: dict[str, str] = field(default_factory=dict)
    needs_analysis: tuple[str, ...] = ()
    quick: bool = False
    train: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    vary: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ablations: tuple[str, ...] = ("none",)
    image_size: int | None = None

    def method_list(self) -> tuple[str, ...]:
        from methods.registry import method_names

        return tuple(method_names()) if self.methods == "all" else tuple(self.methods)

    def levels(self, dataset: str, arch: str) -> list[float | str]:
        """The requested sparsities of (dataset, arch), with "sweep" expanded and "paper" resolved."""
        from bench.paper import paper_sparsity

        levels: list[float | str] = []
        for item in self.sparsities:
            if item == SWEEP:
                levels.extend(sweep_levels(*self.sweep))
            elif item == FOUND:
                levels.append(FOUND)
            elif item == PAPER:
                levels.append(paper_sparsity(dataset, arch))
            else:
                levels.append(check_sparsity(item))
        return list(dict.fromkeys(levels))

    def paper_levels(self, dataset: str, arch: str) -> list[float]:
        from bench.paper import paper_sparsity

        return [paper_sparsity(dataset, arch)] if PAPER in self.sparsities else []

    def levels_asked_of_self_finders(self) -> set[tuple[str, str, str, float]]:
        """(method, dataset, arch, level) for each numeric level, other than the paper's, that this part
        asks of a method that finds its own sparsity (mode "none": a job at its s* and one at `paper`)."""
        asked = set()
        for method in self.method_list():
            method_class = _method_class(method)
            if (self.modes.get(method) or method_class.sparsity_mode) == "none" and method_class.takes_sparsity:
                asked |= {(method, dataset, arch, level) for dataset in self.datasets for arch in self.archs
                          for level in self.levels(dataset, arch)
                          if level != FOUND and level not in self.paper_levels(dataset, arch)}
        return asked

    def validate(self) -> None:
        """Fail fast, before any job runs, on an unknown dataset or arch (methods: in `jobs`)."""
        from bench.data import DATASETS, parse_dataset_name
        from bench.models import ARCHS

        for dataset in self.datasets:
            DATASETS.get(parse_dataset_name(dataset)[0])
        for arch in self.archs:
            ARCHS.get(arch)

    def size(self) -> int:
        """An upper bound of the number of jobs this part expands to (checked before expanding)."""
        levels = sum(len(sweep_levels(*self.sweep)) if item == SWEEP else 1 for item in self.sparsities)
        count = len(self.datasets) * len(self.archs) * self.trials * len(self.method_list()) * len(self.ablations)
        for options in self.vary.values():
            count *= len(options)
        return count * max(1, levels)

    def jobs(self) -> list[JobSpec]:
        self.validate()
        if self.size() > MAX_PLAN_JOBS:
            raise BenchError(f"grid {self.name!r} expands to up to {self.size()} jobs; accepted: at most "
                             f"{MAX_PLAN_JOBS} per block (fewer trials, levels or [vary] values, or split the grid)")
        specs = []
        settings_product = _product(self.vary)
        for dataset, arch, trial in itertools.product(self.datasets, self.archs, range(self.trials)):
            for method in self.method_list():
                method_class = _method_class(method)
                for varied in settings_product:
                    train = dict(self.train) | varied["train"]
                    quick = dict(method_class.quick_hparams) if self.quick else {}
                    hparams = quick | dict(self.hparams.get(method, {})) | varied["hparams"]
                    for sparsity, ablation in itertools.product(
                            self.method_sparsities(method, method_class, dataset, arch), self.ablations):
                        analysis = self.found_analysis(varied) if sparsity == FOUND and not (
                            method_class.reuses_found_analysis or method_class.provides_found) else {}
                        specs.append(normalized(JobSpec(method=method, dataset=dataset, arch=arch, trial=trial,
                                                        sparsity=sparsity, train=train, hparams=hparams,
                                                        analysis=analysis, ablation=ablation,
                                                        image_size=self.image_size)))
        return specs

    def found_analysis(self, varied: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Settings of the analysis whose s* this part's "found" jobs take: those of its first method that
        reuses the analysis (`reuses_found_analysis`: IMC's variants), else the analysis' own, so that
        the found-sparsity table compares every method at the s* those rows report."""
        from methods.registry import found_provider

        source_class = next((_method_class(name) for name in self.method_list()
                             if _method_class(name).reuses_found_analysis), None) or found_provider()
        quick = dict(source_class.quick_hparams) if self.quick else {}
        return source_class.found_analysis_hparams(quick | dict(self.hparams.get(source_class.name, {}))
                                                   | varied["hparams"])

    def method_sparsities(self, method: str, method_class: type, dataset: str, arch: str
                          ) -> list[float | str | None]:
        mode = self.modes.get(method) or method_class.sparsity_mode
        if mode not in MODES:
            raise BenchError(f"grid {self.name!r}: mode {mode!r} of method {method}; accepted: {', '.join(MODES)}")
        if mode == "none":  # a method that finds its sparsity still runs at the paper's operating point
            return [None, *(self.paper_levels(dataset, arch) if method_class.takes_sparsity else [])]
        levels = self.levels(dataset, arch)
        if not levels:
            raise BenchError(f"grid {self.name!r} gives method {method} no sparsity; accepted: floats, found, sweep, "
                             "paper")
        if mode == "levels":
            return levels
        numeric = [level for level in levels if level != FOUND]
        return [max(numeric)] if numeric else [FOUND]


def sweep_levels(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ..., stop (inclusive), rounded to 4 decimals so 0.15 stays 0.15."""
    if step <= 0 or start > stop:
        raise BenchError(f"sweep [{start}, {stop}, {step}] is empty; accepted: [start, stop, step] with step > 0")
    count = int(round((stop - start) / step)) + 1
    if count > MAX_SWEEP_LEVELS:
        raise BenchError(f"sweep [{start}, {stop}, {step}] has {count} levels; accepted: at most {MAX_SWEEP_LEVELS} "
                         "(a larger step)")
    return [check_sparsity(round(start + index * step, 4)) for index in range(count)]


def _product(vary: dict[str, tuple[Any, ...]]) -> list[dict[str, dict[str, Any]]]:
    keys = list(vary)
    combos = []
    for values in itertools.product(*(vary[key] for key in keys)):
        combo: dict[str, dict[str, Any]] = {"train": {}, "hparams": {}}
        for key, value in zip(keys, values, strict=True):
            section, _, name = key.partition(".")
            if section not in combo or not name:
                raise BenchError(f"vary key {key!r}; accepted: 'train.<field>' or 'hparams.<setting>'")
            combo[section][name] = value
        combos.append(combo)
    return combos


def _method_class(name: str, why: str = "") -> type:
    from methods.registry import get_method

    try:
        return get_method(name)
    except UnknownNameError as error:
        if not why:
            raise
        raise BenchError(f"{why} {name!r}, which is not registered; accepted: {', '.join(error.accepted)}") from None


def normalized(spec: JobSpec, why: str = "") -> JobSpec:
    """The spec with settings validated and those equal to their defaults dropped."""
    from bench.jobs import train_settings_for
    from bench.settings_build import build_settings
    from bench.train import TrainSettings
    from methods.registry import check_ablation

    method_class = _method_class(spec.method, why)
    check_ablation(method_class, spec.ablation)
    train_settings = train_settings_for(spec)
    train = {key: value for key, value in spec.train.items()
             if getattr(train_settings, key) != getattr(TrainSettings(), key)}
    settings = build_settings(method_class.Settings, spec.hparams, f"method {spec.method}")
    defaults = method_class.Settings()
    hparams = {key: value for key, value in spec.hparams.items() if getattr(settings, key) != getattr(defaults, key)}
    analysis = spec.analysis
    if analysis:
        from methods.registry import found_provider

        analysis_class = found_provider()
        analysis_settings = build_settings(analysis_class.Settings, analysis, "the found-sparsity analysis")
        analysis = {key: value for key, value in analysis.items()
                    if getattr(analysis_settings, key) != getattr(analysis_class.Settings(), key)}
    return replace(spec, train=train, hparams=hparams, analysis=analysis)


@dataclass(frozen=True)
class PlannedJob:
    """A job of the plan and the ids of the jobs it waits for (IMC's analysis for "found")."""

    spec: JobSpec
    after: tuple[str, ...] = ()
    recorded_id: str | None = None
    """The id the job was run under (`bench.plans`): the report finds its folder without hashing the spec,
    which needs the method's code (a plugin that is not installed here)."""

    @property
    def job_id(self) -> str:
        return self.recorded_id or self.spec.job_id


@dataclass(frozen=True)
class Grid:
    """A named grid: its parts (blocks and included grids) expand to jobs and plan."""

    name: str
    description: str = ""
    parts: tuple[GridPart, ...] = ()

    def jobs(self) -> list[JobSpec]:
        """Every job of every part, deduplicated by id, in grid order."""
        unique: dict[str, JobSpec] = {}
        for part in self.parts:
            for spec in part.jobs():
                unique.setdefault(spec.job_id, spec)
        return list(unique.values())

    def levels_not_planned(self, jobs: list[JobSpec]) -> list[str]:
        """In words, the levels a part asks of a method that finds its own sparsity and that no part of
        the grid plans for it (a block with mode "levels" for the method does): said, never silent.
        `jobs`: this grid's `jobs()`, expanded once by the caller."""
        planned = {(spec.method, spec.dataset, spec.arch, spec.sparsity) for spec in jobs}
        asked = set().union(*(part.levels_asked_of_self_finders() for part in self.parts)) - planned
        by_method: dict[str, set[float]] = {}
        for method, _, _, level in asked:
            by_method.setdefault(method, set()).add(level)
        left: dict[tuple[float, ...], list[str]] = {}
        for method in sorted(by_method):
            left.setdefault(tuple(sorted(by_method[method])), []).append(method)
        lines = []
        for levels, methods in left.items():
            one = len(methods) == 1
            lines.append(f"{', '.join(methods)} {'finds its' if one else 'find their'} own sparsity: grid "
                         f"{self.name!r} runs {'it' if one else 'them'} at that s* (and at `paper` where the grid "
                         f"asks for it), not at {', '.join(f'{level:g}' for level in levels)}; mode \"levels\" "
                         f"([modes] of the grid or a block) runs {'it' if one else 'them'} there")
        return lines

    def plan(self, filters: dict[str, tuple[str, ...]] | None = None,
             jobs: list[JobSpec] | None = None) -> list[PlannedJob]:
        """The selected jobs plus the analysis jobs they wait for, each dependency before its dependents
        (`jobs`: this grid's `jobs()` where the caller has expanded them already)."""
        needs = {method for part in self.parts for method in part.needs_analysis}
        selected = [spec for spec in (self.jobs() if jobs is None else jobs) if matches(spec, filters or {})]
        return plan_jobs(selected, needs)


def plan_jobs(specs: list[JobSpec], needs_analysis: Collection[str] = ()) -> list[PlannedJob]:
    """`specs` as planned jobs: those at "found" (and of the methods in `needs_analysis`, or whose
    class sets `needs_analysis`) wait for `bench.found.analysis_spec(spec)`, which is added to the plan
    once and placed before every job."""
    analyses: dict[str, JobSpec] = {}
    planned = []
    for spec in specs:
        after: tuple[str, ...] = ()
        if spec.sparsity == FOUND or spec.method in needs_analysis or _method_class(spec.method).needs_analysis:
            analysis = normalized(found.analysis_spec(spec), f"job {spec.job_id} waits for the analysis method")
            if analysis.job_id != spec.job_id:
                analyses.setdefault(analysis.job_id, analysis)
                after = (analysis.job_id,)
        planned.append(PlannedJob(spec, after))
    own = {job.job_id for job in planned}
    first = [PlannedJob(spec) for job_id, spec in analyses.items() if job_id not in own]
    by_id = {job.job_id: job for job in planned}
    ordered = [job for job in planned if job.job_id in analyses]  # analyses the grid lists itself go first
    return first + ordered + [by_id[job_id] for job_id in by_id if job_id not in analyses]


def matches(spec: JobSpec, filters: dict[str, tuple[str, ...]]) -> bool:
    for key, accepted in filters.items():
        if key.startswith(("train.", "hparams.")):
            section, _, name = key.partition(".")
            value = getattr(spec, section).get(name)
        else:
            value = getattr(spec, key)
        if not any(_same(value, text) for text in accepted):
            return False
    return True


def _same(value: Any, text: str) -> bool:
    if value is None:
        return text in ("none", "")
    try:
        return float(value) == float(text)
    except (TypeError, ValueError):
        return str(value) == text


def parse_filters(items: list[str] | None) -> dict[str, tuple[str, ...]]:
    """`["method=snip,grasp", "trial=0"]` -> {"method": ("snip", "grasp"), "trial": ("0",)}."""
    filters: dict[str, tuple[str, ...]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise BenchError(f"filter {item!r} is not key=value; accepted keys: {', '.join(FILTER_KEYS)}, "
                             "train.<field>, hparams.<setting>")
        if key not in FILTER_KEYS and not key.startswith(("train.", "hparams.")):
            raise BenchError(f"unknown filter key {key!r}; accepted: {', '.join(FILTER_KEYS)}, train.<field>, "
                             "hparams.<setting>")
        filters[key] = filters.get(key, ()) + tuple(part.strip() for part in value.split(","))
    return filters


def grid_names() -> list[str]:
    return sorted(path.stem for path in GRIDS_DIR.glob("*.toml") if not path.stem.startswith("_"))


def _grid_path(name: str) -> Path:
    if name.endswith(".toml"):
        path = Path(name)
        if not path.exists():
            raise BenchError(f"grid file {name} does not exist; accepted: a TOML path or {', '.join(grid_names())}")
        return path
    path = GRIDS_DIR / f"{name}.toml"
    if not path.exists():
        raise BenchError(f"unknown grid {name!r}; accepted: {', '.join(grid_names())} or a path to a .toml file")
    return path


def _read(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw TOML of a grid with its `extends` chain merged in (tables merged key by key)."""
    if name in seen:
        raise BenchError(f"grid {name!r} extends itself through {' -> '.join(seen)}")
    path = _grid_path(name)
    raw = tomllib.loads(path.read_text())
    unknown = sorted(set(raw) - FILE_KEYS)
    if unknown:
        raise BenchError(f"grid {path} has unknown key(s) {unknown}; accepted: {', '.join(sorted(FILE_KEYS))}")
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    base = _read(base_name if base_name.endswith(".toml") else base_name, (*seen, name))
    return _merge(base, raw)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_names(grid: str, key: str, value: Any) -> None:
    """`value` must be a list of names (a string would be read one character at a time)."""
    if isinstance(value, str):
        raise BenchError(f"grid {grid!r}: {key} = {value!r} is a string; accepted: a list such as [{value!r}]")
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BenchError(f"grid {grid!r}: {key} = {value!r}; accepted: a list of names (strings)")


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_raw(name: str, raw: dict[str, Any]) -> None:
    """Every key of a grid block has its type (one line naming the key and the value otherwise)."""
    def refuse(key: str, accepted: str) -> None:
        raise BenchError(f"grid {name!r}: {key} = {raw[key]!r}; accepted: {accepted}")

    if "methods" in raw and raw["methods"] != "all":
        _check_names(name, "methods", raw["methods"])
    for key in NAME_LISTS:
        if key in raw:
            _check_names(name, key, raw[key])
    if "sparsities" in raw and (not isinstance(raw["sparsities"], list) or not all(
            _finite_number(item) or item in (FOUND, SWEEP, PAPER) for item in raw["sparsities"])):
        refuse("sparsities", f"a list of floats in [0, 1) and {FOUND!r}, {SWEEP!r}, {PAPER!r}, e.g. [0.5]")
    if "sweep" in raw and (not isinstance(raw["sweep"], list) or len(raw["sweep"]) != 3
                           or not all(_finite_number(item) for item in raw["sweep"])):
        refuse("sweep", "[start, stop, step] (three numbers)")
    if "trials" in raw and (not isinstance(raw["trials"], int) or isinstance(raw["trials"], bool)
                            or not 1 <= raw["trials"] <= MAX_TRIALS):
        refuse("trials", f"an integer in [1, {MAX_TRIALS}]")
    if "quick" in raw and not isinstance(raw["quick"], bool):
        refuse("quick", "true or false (TOML booleans, unquoted)")
    if "image_size" in raw and (not isinstance(raw["image_size"], int) or isinstance(raw["image_size"], bool)
                                or raw["image_size"] < 1):
        refuse("image_size", "an integer >= 1")
    if "modes" in raw and (not isinstance(raw["modes"], dict) or not all(mode in MODES for mode in raw["modes"].values())):
        refuse("modes", f"a table method = mode, mode one of {', '.join(MODES)}")
    if "train" in raw and not isinstance(raw["train"], dict):
        refuse("train", "a table of training settings ([train])")
    if "hparams" in raw and (not isinstance(raw["hparams"], dict)
                             or not all(isinstance(table, dict) for table in raw["hparams"].values())):
        refuse("hparams", "tables of settings per method ([hparams.<method>])")
    if "vary" in raw and (not isinstance(raw["vary"], dict) or not all(
            isinstance(options, list) and options for options in raw["vary"].values())):
        refuse("vary", "a table of non-empty lists, e.g. {\"train.lr\" = [0.1, 0.05]}")


def _part(name: str, raw: dict[str, Any]) -> GridPart:
    unknown = sorted(set(raw) - PART_KEYS)
    if unknown:
        raise BenchError(f"grid {name!r} block has unknown key(s) {unknown}; accepted: {', '.join(sorted(PART_KEYS))}")
    _check_raw(name, raw)
    values: dict[str, Any] = {"name": name}
    for item in fields(GridPart):
        if item.name not in raw or item.name == "name":
            continue
        value = raw[item.name]
        if item.name == "vary":
            value = {key: tuple(options) for key, options in value.items()}
        elif isinstance(value, list):
            value = tuple(value)
        values[item.name] = value
    if raw.get("name"):
        values["name"] = f"{name}/{raw['name']}"
    return GridPart(**values)


def load_grid(name: str, including: tuple[str, ...] = ()) -> Grid:
    if name in including:
        raise BenchError(f"grid {name!r} includes itself through {' -> '.join((*including, name))}; accepted: "
                         "includes without a cycle")
    raw = _read(name)
    description = raw.pop("description", "")
    includes = raw.pop("include", [])
    _check_names(name, "include", includes)
    blocks = raw.pop("block", None)
    grid_name = Path(name).stem if name.endswith(".toml") else name
    parts: list[GridPart] = []
    for included in includes:
        parts.extend(load_grid(included, (*including, name)).parts)
    if blocks:
        parts.extend(_part(grid_name, _merge(raw, block)) for block in blocks)
    elif not includes or set(raw) & {"methods", "datasets"}:
        parts.append(_part(grid_name, raw))
    return Grid(name=grid_name, description=description, parts=tuple(parts))


def parse_sparsities(text: str) -> tuple[float | str, ...]:
    return tuple(item.strip() if item.strip() in (FOUND, SWEEP, PAPER) else check_sparsity(item)
                 for item in text.split(",") if item.strip())


def override(grid: Grid, **changes: Any) -> Grid:
    """The grid with CLI overrides applied to every part (None means: keep the grid's value)."""
    epochs = changes.pop("epochs", None)
    kept = {key: value for key, value in changes.items() if value is not None}
    parts = []
    for part in grid.parts:
        train = dict(part.train) | ({"epochs": epochs} if epochs is not None else {})
        parts.append(replace(part, train=train, **kept))
    return replace(grid, parts=tuple(parts))
