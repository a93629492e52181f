"""Shared fixtures: a per-session dataset cache, the tiny digits data, and a small job runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.data import DataSettings, DeviceData, load_dataset
from bench.jobs import run_job
from bench.spec import JobSpec, RunSettings
from bench.store import write_spec

TINY_ARCH = "resnet8"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test writes dataset caches under a temporary folder, never the user's ~/.cache."""
    import os

    os.environ["PRUNEBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    if "OMP_NUM_THREADS" not in os.environ:  # a run beside a background job sets it (threads would spin)
        torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_settings() -> DataSettings:
    return DataSettings()


@pytest.fixture(scope="session")
def digits(digits_settings: DataSettings):
    return load_dataset("digits", digits_settings)


@pytest.fixture()
def digits_device(digits) -> DeviceData:
    return DeviceData(digits, "cpu")


def run_spec(results: Path, spec: JobSpec, **options) -> dict:
    """Write and run one job on the CPU; return its final status."""
    return run_job(write_spec(results, spec, RunSettings(device="cpu", progress=False)), **options)


def tiny_dense(**changes) -> JobSpec:
    """A one-epoch dense job on 300 digits with the tiny arch (`changes` replace its fields)."""
    return JobSpec(**({"method": "dense", "dataset": "digits@300", "arch": TINY_ARCH, "train": {"epochs": 1}} | changes))
