"""A method's code as part of a result's identity: its module, version and source hash.

A method class declares `version` (`methods.base.Method`), which its author bumps when a change of the
code changes its results; a version other than 1 is part of the job id (`bench.spec`), so a job done
under another version is run again, and `bench.run` says so. What a version cannot catch (a change
of the source under the same version) the source hash shows: every job's `provenance.json` records,
for each method it used (its own, and the found-sparsity provider for a job at "found"), the module,
the version and the sha256 of the source files that define the class and its method base classes
(e.g. `baselines/_scoring.py` for the prune-at-init methods; `methods/base.py`, the harness contract, is
left out). The report compares them with the installed code and across jobs; it reads them from
records, so it works where the method is not installed.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.errors import BenchError
from bench.spec import FOUND, JobSpec
from bench.store import DONE, JOBS_FOLDER, job_dir, read_status

if TYPE_CHECKING:
    from bench.grid import PlannedJob
    from methods.registry import Method


def source_modules(method_class: type[Method]) -> list[str]:
    """The modules defining `method_class` and its method base classes, the contract's own left out."""
    from methods.registry import Method

    modules = [klass.__module__ for klass in method_class.__mro__
               if isinstance(klass, type) and issubclass(klass, Method) and klass is not Method]
    # the contract's module is the harness' side of every method (the git sha in provenance tracks it)
    return [module for module in dict.fromkeys(modules) if module != Method.__module__]


def file_sha256(module_name: str) -> str | None:
    """sha256 of the module's source file (None where it has none, e.g. a compiled module)."""
    module = sys.modules.get(module_name)
    try:
        path = inspect.getsourcefile(module) if module is not None else None
    except TypeError:
        path = None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def method_identity(method_class: type[Method]) -> dict[str, Any]:
    """What `provenance.json` records of a method: module, version, and the sha256 of its sources (each
    file's, and one over them all: `source_sha256`)."""
    sources = {module: file_sha256(module) for module in source_modules(method_class)}
    combined = hashlib.sha256("".join(f"{module}:{digest}\n" for module, digest in sources.items()).encode())
    return {"module": method_class.__module__, "class": method_class.__qualname__, "version": method_class.version,
            "source_sha256": combined.hexdigest(), "sources": sources}


def methods_used(spec: JobSpec) -> dict[str, dict[str, Any]]:
    """Method name -> identity for every method the job's result depends on: its own, and for a job at
    "found" the method whose analysis gives s*."""
    from methods.registry import found_provider, get_method

    classes = [get_method(spec.method)] + ([found_provider()] if spec.sparsity == FOUND else [])
    return {method_class.name: method_identity(method_class) for method_class in classes}


def superseded(planned: list[PlannedJob], results: Path) -> dict[str, int]:
    """Method -> how many planned jobs are not done under the method's version but were done under an
    earlier one (they run again: their ids changed with the version)."""
    from methods.registry import get_method

    counts: Counter[str] = Counter()
    for job in planned:
        version = get_method(job.spec.method).version
        if version == 1 or read_status(job_dir(results, job.spec))["state"] == DONE:
            continue
        if any(read_status(Path(results) / JOBS_FOLDER / job.spec.job_id_at(older))["state"] == DONE
               for older in range(1, version)):
            counts[job.spec.method] += 1
    return dict(counts)


def superseded_lines(planned: list[PlannedJob], results: Path) -> list[str]:
    """One line per method whose jobs run again because its version changed."""
    from methods.registry import get_method

    return [f"note: method {method} is at version {get_method(method).version}: {count} job(s) done under an "
            "earlier version run again (new ids; the old job folders stay)"
            for method, count in superseded(planned, results).items()]


def installed_identity(method: str) -> dict[str, Any] | None:
    """The identity of the method as installed here; None where it is not (a plugin of another machine)."""
    from methods.registry import get_method

    try:
        return method_identity(get_method(method))
    except BenchError:  # unknown here, or a plugin that does not load: the records still report
        return None


def code_notes(jobs: pd.DataFrame) -> list[str]:
    """Where done jobs' recorded method code differs: from the installed code under the same version, or
    from other jobs of the same method and version (one line each; the report lists them)."""
    notes = []
    recorded = jobs[(jobs.state == DONE) & jobs.method_source.astype(bool)]
    for (method, version), group in recorded.groupby(["method", "method_version"]):
        sources = Counter(group.method_source)
        if len(sources) > 1:
            counts = ", ".join(f"{digest[:12]} ({count} job(s))" for digest, count in sources.most_common())
            notes.append(f"method {method} version {version}: its jobs ran different source code under one "
                         f"version ({counts}); bump `version` when results change")
        installed = installed_identity(method)
        if installed is None:
            notes.append(f"method {method}: not installed here; its records are reported as recorded")
        elif installed["version"] == version and set(sources) != {installed["source_sha256"]}:
            stale = sum(count for digest, count in sources.items() if digest != installed["source_sha256"])
            notes.append(f"method {method} version {version}: {stale} job(s) ran source code that differs from the "
                         f"installed one ({installed['source_sha256'][:12]}) under the same version")
    return notes
