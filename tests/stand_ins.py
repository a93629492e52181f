"""Test-only stand-ins for the paper's methods that another branch registers (IMC, the baselines).

Loaded through `PRUNEBENCH_PLUGINS=tests.stand_ins` (also inside SLURM jobs, which inherit the
environment). A stand-in is registered only when the real method is absent, so after the IMC and
baseline branches merge the tests use the real registry entries. The stand-ins carry the settings the
paper grids vary, with Table 16's defaults, so that `--grid full --dry-run` counts the same jobs.
Only `imc-analysis` runs: it trains like `dense` and then waits `STAND_IN_ANALYSIS_SECONDS`, so that
the SLURM `afterok` test can see its dependents start after it ends.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from baselines.dense import Dense
from bench.job_context import JobContext
from methods.base import Method
from methods.registry import METHODS, register

LEVEL_METHODS = ("flow-prune", "snip", "synflow", "grasp", "sanity-check", "continuous-sparsification")
LTH_METHODS = ("lth-reinit", "lth-rewind", "lth-finetune")
IMC_VARIANTS = ("imc-reinit", "imc-rewind", "imc-finetune")


@dataclass(frozen=True)
class ImcStandInSettings:
    pretrain_epochs: int = 10
    rewind_epoch: int = 10
    hessian_batch_size: int = 128
    lipschitz_p: float = 2
    lipschitz_delta: float = 0.01


class StandIn(Method):
    def run(self, context: JobContext) -> list[dict[str, Any]]:
        raise NotImplementedError(f"{self.name} is a test stand-in: its branch is not merged")


class ImcVariantStandIn(StandIn):
    Settings = ImcStandInSettings
    takes_sparsity = False
    finds_sparsity = True
    reuses_found_analysis = True


class AnalysisStandIn(Dense):
    Settings = ImcStandInSettings
    quick_hparams = {"pretrain_epochs": 1}
    provides_found = True

    def run(self, context: JobContext) -> list[dict[str, Any]]:
        records = super().run(context)
        time.sleep(float(os.environ.get("STAND_IN_ANALYSIS_SECONDS", "0")))
        return records


def _register(name: str, base: type) -> None:
    if name not in METHODS:
        register(name)(type(f"StandIn_{name.replace('-', '_')}", (base,), {}))


for _name in LEVEL_METHODS + LTH_METHODS:
    _register(_name, StandIn)
for _name in IMC_VARIANTS:
    _register(_name, ImcVariantStandIn)
_register("imc-analysis", AnalysisStandIn)
_register("imc-lipschitz", ImcVariantStandIn)
