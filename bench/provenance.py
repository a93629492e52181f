"""Where a result came from: code version, library versions, device, thread counts, host and SLURM ids.

CPU results are deterministic for the same seed, CPU and thread count only (a reduction summed by
another number of threads rounds differently), so the thread counts are recorded and the report shows them.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from bench.devices import cpu_model

REPO_ROOT = Path(__file__).resolve().parent.parent
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                   "SLURM_JOB_PARTITION", "SLURM_NODELIST")


OUTPUT_FOLDERS = ("reports", "results")
"""Tracked folders the harness writes into (`bench.report` into reports/default/): changes there are
outputs, not code, so they never mark a later run's code as dirty."""


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                 *(f":(exclude){folder}" for folder in OUTPUT_FOLDERS))
    return {"sha": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def provenance(device: torch.device) -> dict[str, Any]:
    from bench import __version__

    return {
        "prunebench": __version__,
        "git": git_state(),
        "code": str(REPO_ROOT),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "slurm": {name: os.environ[name] for name in SLURM_VARIABLES if name in os.environ},
    }
