"""Plugins from installed packages: methods, architectures and datasets registered through entry points.

A package adds to prunebench the way pytest, submitit and setuptools plugins do: its `pyproject.toml`
names a module in one of the groups below, and importing that module registers what it defines (the
`@register("name")` decorators of `methods.api`):

    [project.entry-points."prunebench.methods"]
    my-score = "my_package.my_score"

The groups are read with `importlib.metadata` when a registry is first used, so every process that
runs jobs (inline, local workers, SLURM) sees the same plugins without an environment variable.
Modules on the path can still be named in `PRUNEBENCH_PLUGINS` (`methods.registry`). Both routes
import through `import_plugin`: a plugin that fails to import, or registers a name that already
exists, is one `PluginError` line naming the plugin (the entry point with its distribution, or the
variable's entry) and its module. The report of finished jobs reads records, not code, so it
works without the plugin installed.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from bench.errors import BenchError, DuplicateNameError

METHODS_GROUP = "prunebench.methods"
ARCHS_GROUP = "prunebench.archs"
DATASETS_GROUP = "prunebench.datasets"


class PluginError(BenchError):
    """A plugin could not be loaded: its import failed or it registered a name that exists."""


def describe_entry_point(entry_point: EntryPoint) -> str:
    """`entry point 'name = module' (group G, distribution D x.y)` for error messages."""
    dist = entry_point.dist
    origin = f", distribution {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point '{entry_point.name} = {entry_point.value}' (group {entry_point.group}{origin})"


def import_plugin(module_name: str, described: str) -> None:
    """Import `module_name` (which registers what it defines) for the plugin `described` (an entry point,
    a `PRUNEBENCH_PLUGINS` entry); a failure is one `PluginError` line naming the plugin and the module."""
    try:
        importlib.import_module(module_name)
    except DuplicateNameError as error:
        raise PluginError(f"plugin {described}: module {module_name!r} registers a name that exists: "
                          f"{first_line(error)}; accepted: a name no built-in or other plugin uses") from None
    except Exception as error:  # any import failure of third-party code: name the plugin, not a traceback
        raise PluginError(f"plugin {described} failed to import module {module_name!r}: {type(error).__name__}: "
                          f"{first_line(error)}; accepted: an importable module that registers new names") from error


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message ("" for none), so that a plugin's error stays one line."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


def load_entry_points(group: str) -> list[str]:
    """Import the module of every entry point in `group`; return the modules imported."""
    modules = []
    for entry_point in sorted(entry_points(group=group), key=lambda item: item.name):
        if entry_point.pattern.match(entry_point.value) is None:
            raise PluginError(f"plugin {describe_entry_point(entry_point)}: the value is not a module; accepted: "
                              "'package.module' or 'package.module:attribute'")
        module_name = entry_point.module
        import_plugin(module_name, describe_entry_point(entry_point))
        modules.append(module_name)
    return modules
