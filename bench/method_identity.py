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
import importlib.util
import inspect
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

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


def combined_sha256(sources: dict[str, str | None]) -> str:
    """One sha256 over the per-file digests of a method's sources, in the order given (`source_modules`'s)."""
    return hashlib.sha256("".join(f"{module}:{digest}\n" for module, digest in sources.items()).encode()).hexdigest()


def method_identity(method_class: type[Method]) -> dict[str, Any]:
    """What `provenance.json` records of a method: module, version, and the sha256 of its sources (each
    file's, and one over them all: `source_sha256`)."""
    sources = {module: file_sha256(module) for module in source_modules(method_class)}
    return {"module": method_class.__module__, "class": method_class.__qualname__, "version": method_class.version,
            "source_sha256": combined_sha256(sources), "sources": sources}


def installed_sources(modules) -> dict[str, str | None] | None:
    """Module -> sha256 of its source file as installed here (as `method_identity` records them), read
    without running the modules (the report imports no method code); None where one is not installed."""
    digests = {}
    for module in modules:
        try:
            found = importlib.util.find_spec(module)  # runs at most the parent package's __init__
        except (ImportError, ValueError):
            return None
        if found is None or not found.origin:
            return None
        origin = Path(found.origin)
        digests[module] = hashlib.sha256(origin.read_bytes()).hexdigest() if origin.suffix == ".py" else None
    return digests


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


def code_notes(jobs: pd.DataFrame) -> list[str]:
    """Where done jobs' recorded method code differs: from the source files installed here, or from other
    jobs of the same method and version (one line each; the report lists them)."""
    notes = []
    recorded = jobs[(jobs.state == DONE) & jobs.method_source.astype(bool)]
    for (method, version), group in recorded.groupby(["method", "method_version"]):
        sources = Counter(group.method_source)
        if len(sources) > 1:
            counts = ", ".join(f"{digest[:12]} ({count} job(s))" for digest, count in sources.most_common())
            notes.append(f"method {method} version {version}: its jobs ran different source code under one "
                         f"version ({counts}); bump `version` when results change")
        group = group[group.method_sources != "{}"]  # records that name no source files: nothing to compare
        if group.empty:
            continue
        recorded_sources = {listed: json.loads(listed) for listed in set(group.method_sources)}
        installed = {listed: installed_sources(sources) for listed, sources in recorded_sources.items()}
        if None in installed.values():
            notes.append(f"method {method}: not installed here; its records are reported as recorded")
            continue
        stale = int(sum(installed[listed] != recorded_sources[listed] for listed in group.method_sources))
        if stale:
            notes.append(f"method {method} version {version}: {stale} job(s) ran source code that differs from the "
                         "installed one (its source files here)")
    return notes
