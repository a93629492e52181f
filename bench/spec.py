"""A job's identity: what it runs (method, dataset, arch, trial, sparsity, settings) and its id.

The canonical JSON of a `JobSpec` drops every field still at its default (open_lth's rule: a new
setting whose default changes nothing does not rename old runs), sorts keys, and hashes to a short
sha256 prefix. The id is a readable prefix plus that hash, e.g.
`snip-cifar10@5k-resnet20-s0.4-t0-3f9c2a1b7e`; a test pins two hashes.

Where a job runs (device, data root, cache) is a `RunSettings`, stored beside the spec in `spec.json`
but never hashed: the same job has the same id on a laptop and on a cluster.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bench.ablations import ABLATIONS, NO_ABLATION
from bench.data_settings import DataSettings
from bench.errors import BenchError, check_sparsity

FOUND = "found"
HASH_LENGTH = 10


@dataclass(frozen=True)
class JobSpec:
    """One job: a method on a dataset and arch, for one trial, at one requested sparsity."""

    method: str
    dataset: str
    arch: str
    trial: int = 0
    sparsity: float | str | None = None  # None: the method takes no sparsity (dense, found by itself)
    train: dict[str, Any] = field(default_factory=dict)  # TrainSettings overrides
    hparams: dict[str, Any] = field(default_factory=dict)  # the method's Settings overrides
    analysis: dict[str, Any] = field(default_factory=dict)
    """For a job at sparsity "found": the settings of the found-sparsity analysis whose s* it takes
    (empty: its defaults; `bench.found`). A grid sets it to the analysis settings of its methods that
    reuse the analysis (IMC's variants), so every method of a trial is compared at the s* their rows
    report."""
    ablation: str = NO_ABLATION
    """A sanity ablation of the method's mask (`bench.ablations`: none, shuffle, reinit, invert)."""
    image_size: int | None = None
    """Side length the dataset's images are resized to (None: the dataset's own, 32 for the resizing
    sources, so 32 is stored as None); part of the identity because it changes the result."""

    def __post_init__(self) -> None:
        if self.sparsity is not None and self.sparsity != FOUND:
            object.__setattr__(self, "sparsity", check_sparsity(self.sparsity))
        if not isinstance(self.trial, int) or self.trial < 0:
            raise BenchError(f"trial {self.trial!r} is not valid; accepted: an integer >= 0")
        ABLATIONS.get(self.ablation)
        if self.image_size == DataSettings().image_size:  # the resizing sources' default: the same job
            object.__setattr__(self, "image_size", None)
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
                                            or self.image_size < 1):
            raise BenchError(f"image_size {self.image_size!r} is not valid; accepted: an integer >= 1")

    def canonical(self, method_version: int | None = None) -> dict[str, Any]:
        """The spec as a dict without the fields, training overrides and settings at their defaults, with
        the method's code version (`Method.version`; or `method_version`) where it is not 1."""
        from bench.train import TrainSettings
        from methods.registry import found_provider, get_method

        method_class = get_method(self.method)
        value = asdict(self)
        value["train"] = _without_defaults(self.train, TrainSettings)
        value["hparams"] = _without_defaults(self.hparams, method_class.Settings)
        version = method_class.version if method_version is None else method_version
        if version != 1:  # version 1 is dropped as a default is: jobs keep the ids they had before versions
            value["method_version"] = version
        if self.analysis:
            value["analysis"] = _without_defaults(self.analysis, found_provider().Settings)
        if self.sparsity == FOUND and found_provider().version != 1:  # s* comes from that method's code
            value["found_version"] = found_provider().version
        defaults = {item.name: (item.default_factory() if callable(item.default_factory) else item.default)
                    for item in fields(self)}
        return {key: item for key, item in value.items()
                if key not in defaults or item != defaults[key] or key in ("method", "dataset", "arch")}

    def canonical_json(self, method_version: int | None = None) -> str:
        return json.dumps(self.canonical(method_version), sort_keys=True, separators=(",", ":"))

    def digest(self, method_version: int | None = None) -> str:
        return hashlib.sha256(self.canonical_json(method_version).encode()).hexdigest()[:HASH_LENGTH]

    @property
    def job_id(self) -> str:
        return self.job_id_at()

    def job_id_at(self, method_version: int | None = None) -> str:
        """The job's id with its method at `method_version` (None: the installed method's version)."""
        if self.sparsity is None:
            level = "dense" if self.method == "dense" else "auto"
        elif self.sparsity == FOUND:
            level = "sfound"
        else:
            level = f"s{self.sparsity:g}"
        ablation = "" if self.ablation == NO_ABLATION else f"-{self.ablation}"
        return f"{self.method}-{self.dataset}-{self.arch}-{level}-t{self.trial}{ablation}-{self.digest(method_version)}"

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> JobSpec:
        known = {item.name for item in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise BenchError(f"unknown job spec field(s) {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**value)


def _without_defaults(overrides: dict[str, Any], settings_class: type) -> dict[str, Any]:
    defaults = {item.name: item.default for item in fields(settings_class)}
    return {key: value for key, value in overrides.items()
            if key not in defaults or _comparable(value) != _comparable(defaults[key])}


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


@dataclass(frozen=True)
class RunSettings:
    """Where and how a job runs on this machine; not part of its identity."""

    device: str = "cpu"
    data: DataSettings = field(default_factory=DataSettings)
    progress: bool | None = None  # None: a progress bar when stderr is a terminal
    log_every: int = 10  # off a terminal: a log line every this many epochs (0: none)
    log: tuple[str, ...] = ()  # extra epoch loggers (bench.epoch_logs.LOGGERS), e.g. ("tensorboard",)
    checkpoint_interval_s: float = 300.0  # wall seconds between epoch checkpoints (and at phase end, on requeue)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"log": list(self.log)}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> RunSettings:
        return cls(device=value["device"], data=DataSettings(**value["data"]), progress=value.get("progress"),
                   log_every=value.get("log_every", cls.log_every), log=tuple(value.get("log", ())),
                   checkpoint_interval_s=value.get("checkpoint_interval_s", cls.checkpoint_interval_s))
