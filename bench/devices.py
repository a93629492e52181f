"""Device names as job records and throughput measurements carry them: the GPU's name, or the CPU's
model with the thread count (`bench.throughput` keys measurements by it, so a measurement applies to the
jobs that ran on that device; a report whose jobs ran on two machines shows both names).

The CPU model comes from Linux's /proc/cpuinfo ("model name"), since Python's `platform.processor()`
is empty or only the architecture there; elsewhere the architecture stands in for it.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from bench.cpu_support import CPUINFO


@functools.cache
def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """This machine's CPU model (e.g. "AMD EPYC 7B13"), or its architecture where no model can be read."""
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    model = next((line.partition(":")[2].strip() for line in lines if line.startswith("model name")), "")
    return model or platform.processor() or platform.machine()


def thread_count(threads: int) -> str:
    """`threads` as words: "1 thread", "2 threads"."""
    return f"{threads} thread{'' if threads == 1 else 's'}"


def device_name(device: torch.device) -> str:
    """The name a record carries for `device`: the GPU's, or the CPU's model with this process's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {thread_count(torch.get_num_threads())})"
