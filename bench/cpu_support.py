"""Whether this CPU runs bfloat16 fast: which precision pays for training on it (`bench.perf`, docs/performance.md).

bf16 autocast pays on a CPU only where oneDNN has bf16 matrix instructions: AMX-BF16 (Intel Xeon 4th
generation on) or AVX512-BF16 (Intel Cooper Lake on, AMD Zen 4 on). Elsewhere (AVX2-only CPUs, e.g.
AMD EPYC before Zen 4) oneDNN converts bf16 to float32 around every kernel, so bf16 training is no
faster than fp32, usually slower, and rounds more. The flags come from torch (`torch.cpu.get_capabilities`,
torch >= 2.8), else from Linux's /proc/cpuinfo; where neither tells, the answer is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU features with bf16 matrix instructions (the names of Linux's /proc/cpuinfo and torch's capabilities)."""
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Bf16Support:
    """Whether the CPU has fast bf16 (None: unknown), the flags found, and where they came from."""

    fast: bool | None
    flags: tuple[str, ...]
    source: str

    def advice(self) -> str:
        """One line for users: whether `train.precision=bf16` pays on this CPU and which precision to use."""
        wanted = " or ".join(BF16_FLAGS)
        if self.fast is None:
            return (f"bf16 on this CPU: unknown (no {wanted} flag could be read); measure both with "
                    "python -m bench.perf --precision fp32,bf16 before choosing bf16")
        if self.fast:
            return (f"bf16 on this CPU: fast ({', '.join(self.flags)} from {self.source}); "
                    "--set train.precision=bf16 should pay, check with python -m bench.perf --precision fp32,bf16")
        return (f"bf16 on this CPU: NOT fast (no {wanted} in {self.source}); bf16 autocast is emulated and "
                "will not pay here: use fp32 (the default)")


def bf16_support(cpuinfo: Path = CPUINFO) -> Bf16Support:
    """Fast bf16 on this CPU, from torch's capabilities, else /proc/cpuinfo's flags."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        found = capabilities()
        if all(flag in found for flag in BF16_FLAGS):
            flags = tuple(flag for flag in BF16_FLAGS if found[flag])
            return Bf16Support(bool(flags), flags, "torch.cpu.get_capabilities()")
    return bf16_support_from_cpuinfo(cpuinfo)


def bf16_support_from_cpuinfo(cpuinfo: Path = CPUINFO) -> Bf16Support:
    """Fast bf16 from the `flags` line of a Linux /proc/cpuinfo (unknown where there is none)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return Bf16Support(None, (), "no /proc/cpuinfo")
    line = next((line for line in text.splitlines() if line.startswith("flags")), None)
    if line is None:
        return Bf16Support(None, (), f"{cpuinfo} (no flags line)")
    present = set(line.partition(":")[2].split())
    flags = tuple(flag for flag in BF16_FLAGS if flag in present)
    return Bf16Support(bool(flags), flags, str(cpuinfo))
