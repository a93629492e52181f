"""Checks `bench.run` makes before any job folder is written: every problem found here is one line, exit 2.

- the grid's parts, with the command line's overrides, have the right types (a float `trials` or
  `epochs` is refused, not misread; a grid file's own key types are checked when it is read,
  `bench.grid`), and `trials` is at least 1;
- every job's training and method settings build (names, types, finite numbers, ranges), and what a
  method can only find out by running it is asked first (`Method.stage_needs`, `Method.check_job`: a
  rewind epoch past the run, rounds that cannot reach the requested sparsity), and what it changes for a
  job is said (`Method.job_notes`: a sparse-training schedule fitted to a short job);
- `--results` is a folder this user can write (or can be created), and its `jobs/` and `stages/` are
  folders (not files) where they exist;
- every dataset's root exists and holds a layout its source recognises (its cache key reads the
  files), `NAME@Nk` fits the dataset and it has at least two classes (the dataset is decoded into its
  cache, which the first job would do anyway; under SLURM only when the cache is already there);
- the device exists (`cuda:N` within the GPUs torch sees).

The SLURM request itself (CPUs, memory, GPUs, time against the partition's nodes) is checked by
`bench.slurm.limits` when the jobs are submitted.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.data import DATASETS, load_dataset, parse_dataset_name
from bench.data.core import cache_path
from bench.errors import BenchError
from bench.grid import Grid, GridPart, PlannedJob
from bench.jobs import method_for, train_settings_for
from bench.settings_build import build_settings
from bench.spec import RunSettings
from bench.stages import STAGES_FOLDER
from bench.store import JOBS_FOLDER
from bench.train import TrainSettings


def check_grid(grid: Grid) -> None:
    """Refuse grid values of the wrong type before they are expanded into jobs."""
    for part in grid.parts:
        _check_part(part)


def _check_part(part: GridPart) -> None:
    where = f"grid {part.name!r}"  # the file's key types are checked when it is read (`bench.grid`)
    if isinstance(part.trials, bool) or not isinstance(part.trials, int) or part.trials < 1:
        raise BenchError(f"{where}: trials = {part.trials!r} (or --trials); accepted: an integer >= 1")
    if not isinstance(part.train, dict) or not isinstance(part.hparams, dict):
        raise BenchError(f"{where}: [train] and [hparams.<method>] must be tables of settings")
    build_settings(TrainSettings, part.train, f"{where} training")


def check_jobs(planned: list[PlannedJob]) -> list[str]:
    """What each planned job's method can say about it before it runs (also for `--dry-run`, which must
    not list a plan that would fail): refusals raise, notes (`Method.job_notes`) come back, each once."""
    notes: dict[str, None] = {}
    for job in planned:
        build_settings(TrainSettings, job.spec.train, f"job {job.job_id} training")
        method, recipe = method_for(job.spec), train_settings_for(job.spec)
        method.stage_needs(job.spec, recipe)  # e.g. a rewind epoch past the dense run
        method.check_job(job.spec, recipe)  # e.g. rounds that cannot reach the requested sparsity
        notes.update(dict.fromkeys(method.job_notes(job.spec, recipe)))
    return list(notes)


def check_run(planned: list[PlannedJob], results: Path, run: RunSettings, runs_here: bool) -> None:
    """Everything a run needs that can be checked here, before the executor writes a job folder; the decoded
    data and the device only where the jobs run on this machine (`runs_here`; not SLURM jobs). `bench.run`
    asks `check_jobs` before it (and before a dry run)."""
    _check_results(Path(results))
    for name in dict.fromkeys(job.spec.dataset for job in planned):
        _check_dataset(name, run, decode=runs_here)
    if runs_here:
        _check_device(run.device)


def _check_results(results: Path) -> None:
    existing = results
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BenchError(f"--results {results}: {existing} is not a folder; accepted: a writable folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BenchError(f"--results {results}: {existing} is not writable by this user; accepted: a writable folder")
    for name in (JOBS_FOLDER, STAGES_FOLDER):
        path = results / name
        if (path.exists() or path.is_symlink()) and not path.is_dir():
            raise BenchError(f"--results {results}: {path} is not a folder; accepted: a folder of {name} (move "
                             "the file away)")


def _check_dataset(name: str, run: RunSettings, decode: bool) -> None:
    base, _ = parse_dataset_name(name)
    source = DATASETS.get(base)
    source.cache_key(run.data)  # checks the root and its layout (the key fingerprints the files)
    if decode or cache_path(base, source, run.data).exists():
        load_dataset(name, run.data)  # NAME@Nk within the training set, at least two classes


def _check_device(device: str) -> None:
    if not device.startswith("cuda:"):
        return
    import torch

    index = device.partition(":")[2]
    if not index.isdigit() or int(index) >= torch.cuda.device_count():
        raise BenchError(f"device {device!r}: torch sees {torch.cuda.device_count()} GPU(s); accepted: "
                         + (", ".join(f"cuda:{i}" for i in range(torch.cuda.device_count())) or "cpu"))
