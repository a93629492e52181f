"""Declarative grids: `bench/grids/<name>.toml` expanded into job specs.

A grid names methods ("all" or a list), datasets, archs, the number of trials, the requested
sparsities, training overrides (`[train]`) and per-method settings (`[hparams.<method>]`). A method
that takes no sparsity (dense) or finds its own gets one job per (dataset, arch, trial); every other
method gets one job per sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from bench.data import DATASETS, parse_dataset_name
from bench.errors import BenchError, check_sparsity
from bench.models import ARCHS
from bench.spec import FOUND, JobSpec
from methods.registry import get_method, method_names

GRIDS_DIR = Path(__file__).parent / "grids"


@dataclass(frozen=True)
class Grid:
    name: str
    description: str = ""
    methods: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ("digits",)
    archs: tuple[str, ...] = ("resnet20",)
    trials: int = 1
    sparsities: tuple[float | str, ...] = (0.5,)
    train: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        """Fail fast, before any job runs, on an unknown dataset, arch or method."""
        for dataset in self.datasets:
            DATASETS.get(parse_dataset_name(dataset)[0])
        for arch in self.archs:
            ARCHS.get(arch)
        for method in self.methods:
            get_method(method)

    def jobs(self) -> list[JobSpec]:
        self.validate()
        specs = []
        for dataset in self.datasets:
            for arch in self.archs:
                for trial in range(self.trials):
                    for method in self.methods:
                        method_class = get_method(method)
                        levels = self.sparsities if method_class.takes_sparsity and not method_class.finds_sparsity \
                            else (None,)
                        for sparsity in levels:
                            specs.append(JobSpec(method=method, dataset=dataset, arch=arch, trial=trial,
                                                 sparsity=sparsity, train=dict(self.train),
                                                 hparams=dict(self.hparams.get(method, {}))))
        return specs


def grid_names() -> list[str]:
    return sorted(path.stem for path in GRIDS_DIR.glob("*.toml"))


def load_grid(name: str) -> Grid:
    path = GRIDS_DIR / f"{name}.toml"
    if not path.exists():
        raise BenchError(f"unknown grid {name!r}; accepted: {', '.join(grid_names())}")
    raw = tomllib.loads(path.read_text())
    methods = raw.pop("methods", "all")
    methods = tuple(method_names()) if methods == "all" else tuple(methods)
    for method in methods:
        get_method(method)
    unknown = set(raw) - {"description", "datasets", "archs", "trials", "sparsities", "train", "hparams"}
    if unknown:
        raise ValueError(f"grid {path} has unknown keys {sorted(unknown)}")
    return Grid(name=name, methods=methods, **{key: tuple(value) if isinstance(value, list) else value
                                               for key, value in raw.items()})


def parse_sparsities(text: str) -> tuple[float | str, ...]:
    return tuple(FOUND if item.strip() == FOUND else check_sparsity(item) for item in text.split(",") if item.strip())


def override(grid: Grid, **changes: Any) -> Grid:
    """The grid with CLI overrides applied (None means: keep the grid's value)."""
    train = dict(grid.train)
    epochs = changes.pop("epochs", None)
    if epochs is not None:
        train["epochs"] = epochs
    kept = {key: value for key, value in changes.items() if value is not None}
    return replace(grid, train=train, **kept)
