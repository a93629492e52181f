"""The method registry: a method is one file with a class decorated `@register("name")`.

Every module in the `methods` and `baselines` packages is imported on first use, so adding a method
needs no list to edit. Methods kept outside the repository are loaded from the modules named in the
environment variable `PRUNEBENCH_PLUGINS` (comma-separated, imported after the packages); the
variable reaches SLURM jobs with the rest of the submitter's environment. A plugin that is missing,
raises while imported or registers a name already taken is a one-line `BenchError` naming the module.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.registry import Registry

if TYPE_CHECKING:
    from methods.base import Method

METHODS: Registry[type[Method]] = Registry("method")
PLUGIN_PACKAGES = ("baselines", "methods")
PLUGINS_VARIABLE = "PRUNEBENCH_PLUGINS"
_loaded = False


def register(name: str):
    """Class decorator: register a `Method` subclass under `name` and set its `name`."""

    def add(method_class: type[Method]) -> type[Method]:
        method_class.name = name
        return METHODS.register(name)(method_class)

    return add


def load_plugins() -> Registry[type[Method]]:
    """Import every method module once; return the filled registry."""
    global _loaded
    if not _loaded:
        for package_name in PLUGIN_PACKAGES:
            package = importlib.import_module(package_name)
            for module in pkgutil.iter_modules(package.__path__):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{package_name}.{module.name}")
        for module_name in os.environ.get(PLUGINS_VARIABLE, "").split(","):
            if module_name.strip():
                _import_plugin(module_name.strip())
        _loaded = True
    return METHODS


def _import_plugin(module_name: str) -> None:
    """Import a module named in PRUNEBENCH_PLUGINS; any failure is one line naming the module."""
    try:
        importlib.import_module(module_name)
    except Exception as error:  # missing, raising while imported, registering a name twice
        why = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise BenchError(f"{PLUGINS_VARIABLE} module {module_name!r} failed to load ({type(error).__name__}: {why}); "
                         "accepted: importable modules that register methods with new names") from None


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
