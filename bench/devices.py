"""Device names as job records and throughput measurements carry them: the GPU's name, or the CPU with
its thread count (`bench.throughput` keys measurements by it, so a measurement applies to the jobs
that ran on that device)."""

from __future__ import annotations

import platform

import torch


def device_name(device: torch.device) -> str:
    """The name a record carries for `device`: the GPU's, or the CPU's with this process's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
