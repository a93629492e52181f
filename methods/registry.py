"""The method side's one door for the harness: the method registry and the contract names `bench/` uses.

A method is one file with a class decorated `@register("name")`. Every module in the `methods` and
`baselines` packages whose name does not start with `_` is imported on first use, so adding a method
needs no list to edit (underscore modules are helpers and tools, e.g. `methods._imc_timing`, and are
never imported as plugins). Methods kept outside the repository come from installed packages through
the entry-point group `prunebench.methods` (`bench.plugins`: the way pytest and submitit load plugins;
every job process sees them) and from the modules named in the environment variable
`PRUNEBENCH_PLUGINS` (comma-separated, imported last); the variable reaches SLURM jobs with the rest of
the submitter's environment. Both routes import through `bench.plugins.import_plugin`: a plugin that is
missing, raises while imported or registers a name already taken is one `PluginError` line naming the
plugin and its module. A method author imports `methods.api` only.

`bench/` imports nothing else of `methods/` or `baselines/` (`tests/test_layout.py`): what the harness
needs of the contract (`methods.base`, which stays the contract's home) is re-exported here:
`Method`, `Pruner`, `NoSettings`, `PlannedPhase` and `check_ablation` (`CONTRACT_NAMES`, imported on
first use, so that importing the registry does not import torch).
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.plugins import METHODS_GROUP, import_plugin, load_entry_points
from bench.registry import Registry

if TYPE_CHECKING:
    from methods.base import Method, NoSettings, PlannedPhase, Pruner, check_ablation

__all__ = [
    "METHODS", "PLUGINS_VARIABLE", "SPARSITY_MODES", "Method", "NoSettings", "PlannedPhase", "Pruner",
    "check_ablation", "found_provider", "get_method", "load_plugins", "method_names", "register",
]

METHODS: Registry[type[Method]] = Registry("method")
PLUGIN_PACKAGES = ("baselines", "methods")
PLUGINS_VARIABLE = "PRUNEBENCH_PLUGINS"
SPARSITY_MODES = ("levels", "rounds", "none")
"""How a method takes a grid's sparsities (`Method.sparsity_mode`): one job per level, one iterative job
whose rounds cover them, or one job at none."""
_loaded = False
CONTRACT_NAMES = ("Method", "NoSettings", "PlannedPhase", "Pruner", "check_ablation")


def __getattr__(name: str) -> Any:
    """The contract's names, imported from `methods.base` when first asked for: `methods.base` imports
    torch, and what reads records without running methods (`bench.report`, `bench.status`) imports this
    module without ever asking for them."""
    if name in CONTRACT_NAMES:
        from methods import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(name: str):
    """Class decorator: register a `Method` subclass under `name` and set its `name` (a one-line error
    for a bad `sparsity_mode` or `version`)."""

    def add(method_class: type[Method]) -> type[Method]:
        check_declarations(name, method_class)
        method_class.name = name
        return METHODS.register(name)(method_class)

    return add


def check_declarations(name: str, method_class: type[Method]) -> None:
    """What a method class declares about itself, checked when it registers."""
    mode = method_class.sparsity_mode
    if mode not in SPARSITY_MODES:
        raise BenchError(f"method {name}: sparsity_mode = {mode!r}; accepted: {', '.join(SPARSITY_MODES)}")
    if not method_class.takes_sparsity and mode != "none":
        raise BenchError(f"method {name} takes no sparsity (takes_sparsity = False) but declares sparsity_mode = "
                         f"{mode!r}; accepted: 'none'")
    version = method_class.version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BenchError(f"method {name}: version = {version!r}; accepted: an integer >= 1 (bump it when results change)")


def load_plugins() -> Registry[type[Method]]:
    """Import every method module once; return the filled registry."""
    global _loaded
    if not _loaded:
        for package_name in PLUGIN_PACKAGES:
            package = importlib.import_module(package_name)
            for module in pkgutil.iter_modules(package.__path__):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{package_name}.{module.name}")
        load_entry_points(METHODS_GROUP)
        for module_name in filter(None, (name.strip() for name in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
            import_plugin(module_name, f"{module_name!r} (named in {PLUGINS_VARIABLE})")
        _loaded = True
    return METHODS


def get_method(name: str) -> type[Method]:
    return load_plugins().get(name)


def method_names() -> list[str]:
    return load_plugins().names()


def found_provider() -> type[Method]:
    """The one registered method that declares `provides_found`: its job records the s* of "found" jobs."""
    providers = [METHODS.get(name) for name in load_plugins().names() if METHODS.get(name).provides_found]
    if len(providers) != 1:
        names = [provider.name for provider in providers]
        raise BenchError(f"sparsity 'found' needs exactly one registered method that provides it; found {names or 'none'}"
                         "; accepted: a float sparsity in [0, 1)")
    return providers[0]
