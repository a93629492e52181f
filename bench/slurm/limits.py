"""What the SLURM cluster allows, read with `scontrol`: a partition's nodes, and the largest array.

SLURM accepts an array whose tasks ask for more CPUs, memory, GPUs or time than any node of the
partition has, and leaves it pending for ever (reason `PartitionConfig`). Before submitting, this
module reads the partition (`scontrol show partition -o`: its nodes, MaxTime, MaxCPUsPerNode,
MaxMemPerNode) and its nodes (`scontrol show node -o`: CPUTot, RealMemory, Gres) and raises one
`BenchError` naming the first limit the request exceeds. Without `scontrol` nothing is checked.
`max_array_size` reads MaxArraySize (`scontrol show config`) to chunk the submitted arrays.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from bench.errors import BenchError

UNLIMITED = "UNLIMITED"
DEFAULT_MAX_ARRAY_SIZE = 1000


@dataclass(frozen=True)
class PartitionOffer:
    """The most one job can get on one node of a partition (None: no limit known)."""

    name: str
    cpus: int
    mem_mb: int | None
    gpus: int
    time_min: int | None


def scontrol(*args: str) -> str | None:
    """`scontrol ARGS`'s output; None without scontrol or when it fails."""
    if shutil.which("scontrol") is None:
        return None
    try:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _fields(line: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def parse_minutes(text: str) -> int | None:
    """SLURM's time formats (MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in whole minutes; None if unlimited."""
    if text in (UNLIMITED, "INFINITE", "NONE", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(part) for part in rest.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def _gpus(gres: str) -> int:
    """GPUs in a node's Gres, e.g. 'gpu:4', 'gpu:a100:2(S:0-1)', '(null)'."""
    return sum(int(match) for match in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def partition_offer(partition: str | None) -> PartitionOffer | None:
    """What the partition (default: the cluster's default partition) offers one job; None if unknown."""
    output = scontrol("show", "partition", "-o")
    if not output:
        return None
    partitions = [_fields(line) for line in output.splitlines() if line.strip()]
    names = [entry.get("PartitionName", "") for entry in partitions]
    if partition is None:
        chosen = next((entry for entry in partitions if entry.get("Default") == "YES"), None)
        if chosen is None:
            return None
    else:
        chosen = next((entry for entry in partitions if entry.get("PartitionName") == partition), None)
        if chosen is None:
            raise BenchError(f"--partition {partition!r} does not exist; accepted: {', '.join(names)}")
    nodes_output = scontrol("show", "node", "-o", chosen.get("Nodes", "")) if chosen.get("Nodes") else None
    nodes = [_fields(line) for line in (nodes_output or "").splitlines() if line.strip()]
    if not nodes:
        return None
    cpus = max(int(node.get("CPUTot", 0)) for node in nodes)
    if chosen.get("MaxCPUsPerNode", UNLIMITED) != UNLIMITED:
        cpus = min(cpus, int(chosen["MaxCPUsPerNode"]))
    memory = max(int(node.get("RealMemory", 0)) for node in nodes) or None
    if memory is not None and chosen.get("MaxMemPerNode", UNLIMITED) != UNLIMITED:
        memory = min(memory, int(chosen["MaxMemPerNode"]))
    gpus = max(_gpus(node.get("Gres", "")) for node in nodes)
    return PartitionOffer(chosen["PartitionName"], cpus, memory, gpus, parse_minutes(chosen.get("MaxTime", "")))


def check_request(partition: str | None, cpus: int, mem_gb: float, gpus: int, time_min: int) -> None:
    """Refuse, in one line naming the limit, a per-job request that no node of the partition can meet."""
    for flag, value in (("--cpus-per-job", cpus), ("--time-min", time_min)):
        if value < 1:
            raise BenchError(f"{flag} {value}; accepted: an integer >= 1")
    if mem_gb <= 0 or gpus < 0:
        raise BenchError(f"--mem-gb {mem_gb:g} / --gpus-per-job {gpus}; accepted: memory > 0 and GPUs >= 0")
    offer = partition_offer(partition)
    if offer is None:
        return
    where = f"any node of partition {offer.name}"
    if cpus > offer.cpus:
        raise BenchError(f"--cpus-per-job {cpus} is more than {where} has ({offer.cpus} CPUs); SLURM would keep "
                         f"the jobs pending for ever; accepted: --cpus-per-job 1..{offer.cpus}")
    if offer.mem_mb is not None and mem_gb * 1024 > offer.mem_mb:
        raise BenchError(f"--mem-gb {mem_gb:g} is more than {where} has ({offer.mem_mb / 1024:.1f} GB); accepted: "
                         f"--mem-gb up to {offer.mem_mb // 1024}")
    if gpus > offer.gpus:
        raise BenchError(f"--gpus-per-job {gpus} is more than {where} has ({offer.gpus} GPUs); accepted: "
                         f"--gpus-per-job 0..{offer.gpus}" + (" or another --partition" if not offer.gpus else ""))
    if offer.time_min is not None and time_min > offer.time_min:
        raise BenchError(f"--time-min {time_min} is more than partition {offer.name} allows (MaxTime "
                         f"{offer.time_min} min); accepted: --time-min 1..{offer.time_min}")


def max_array_size() -> int:
    """The cluster's MaxArraySize (the largest array has MaxArraySize tasks, indices 0..MaxArraySize-1)."""
    config = scontrol("show", "config")
    if config is None:
        return DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.MULTILINE)
    return max(1, int(match.group(1)) - 1) if match else DEFAULT_MAX_ARRAY_SIZE
