"""The throughput store: images/s that `python -m bench.perf` measured, per device, arch and precision.

One JSON file (default `perf.json` in the dataset cache folder: `$PRUNEBENCH_CACHE` or
`~/.cache/prunebench`; `--perf-file` elsewhere), written atomically, read by `--dry-run` to turn a grid's
image-passes into device-hours. Layout:

    {"devices": {"<device name>": {"<arch>/<precision>": {
        "train_images_per_s": ..., "eval_images_per_s": ...,   # one job on the device
        "packed_images_per_s": {"1": ..., "2": ..., ...},        # all jobs together, N jobs per device
        "measured": "<UTC time>", "host": "<hostname>", "machine": "<CPU model, cores>",
        "torch": "<version>", ...}}}}

The device name is the one job records carry (`bench.devices.device_name`: the GPU's name, or the CPU
with its thread count), so a measurement applies to the jobs that ran on that device.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.atomic import read_json, write_json
from bench.data import DataSettings
from bench.devices import cpu_model
from bench.errors import BenchError

PERF_FILE = "perf.json"


def machine_description() -> str:
    """The machine a measurement was taken on, for people reading it later: CPU model and core count."""
    return f"{cpu_model()}, {os.cpu_count() or 1} cores"


def perf_path(explicit: str | Path | None = None, data: DataSettings | None = None) -> Path:
    """`explicit`, else `perf.json` in the dataset cache folder."""
    if explicit:
        return Path(explicit).expanduser()
    return (data or DataSettings()).resolved_cache_dir() / PERF_FILE


def read_throughputs(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Device name -> "arch/precision" -> measurement; empty when nothing was measured yet."""
    if not path.exists():
        return {}
    try:
        return dict(read_json(path)["devices"])
    except (ValueError, KeyError, TypeError) as error:
        raise BenchError(f"throughput file {path} is unreadable ({type(error).__name__}); accepted: a file "
                         "written by python -m bench.perf, or delete it") from None


def throughput_key(arch: str, precision: str) -> str:
    return f"{arch}/{precision}"


def store_throughput(path: Path, device: str, arch: str, precision: str, measurement: dict[str, Any]) -> None:
    """Add or replace one measurement, keeping the others (atomic write)."""
    devices = read_throughputs(path)
    devices.setdefault(device, {})[throughput_key(arch, precision)] = measurement
    write_json(path, {"devices": devices})
