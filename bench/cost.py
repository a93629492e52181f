"""What a grid costs before it runs: epochs and image-passes by method, and device-hours on a measured device.

Each job's method declares what it will train and evaluate (`Method.planned_phases`), so this module
names no method. A phase that several jobs share (a `stage`: the dense trajectory of a dataset, arch,
trial and recipe, Continuous Sparsification's search) counts once: the furthest any job of the plan
goes into it (IMC reads only the trajectory's first epochs, the dense job all of them), each job
adding what the jobs before it in the plan had not reached.

- training image-passes = epochs trained x training-set size; evaluation image-passes = test passes x
  test-set size; the sizes come from the dataset sources (`bench.data.dataset_sizes`), no data is loaded.
  Scoring and analysis passes (SNIP's batch, Flow&Prune's estimates, IMC's Hessian products) are not
  counted.
- device-hours = training image-passes / training images/s + evaluation image-passes / evaluation
  images/s, at what `python -m bench.perf` stored for the device, the job's arch and precision
  (`bench.throughput`), with one job per device and, where it measured packing, at the best number of
  jobs per device. The throughput is measured on CIFAR-shaped images (3x32x32); jobs of an arch or
  precision not measured on a device are counted apart, never guessed. Each device's hours name the file,
  and for every measurement used the date, host and machine it was taken on (`measured_where`): a number
  measured elsewhere, e.g. copied from a colleague, says so and is never shown as this machine's.
- A job whose work depends on a sparsity found at run time (an iterative method at `found` before
  IMC's analysis is done) or on a dataset whose size is unknown without its files is listed, not counted.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench.data import DataSettings, dataset_sizes
from bench.devices import thread_count
from bench.errors import BenchError
from bench.grid import PlannedJob
from bench.spec import FOUND, JobSpec
from bench.throughput import throughput_key

SECONDS_PER_HOUR = 3600.0


@dataclass
class Cost:
    """Work of a set of jobs: epochs trained and test passes, and the images they touch."""

    jobs: int = 0
    epochs: int = 0
    train_passes: int = 0
    evaluations: int = 0
    eval_passes: int = 0

    def add(self, other: Cost) -> None:
        for name in ("jobs", "epochs", "train_passes", "evaluations", "eval_passes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class GridCost:
    """A plan's cost by method and by (arch, precision), and the jobs it could not count (id -> why)."""

    by_method: dict[str, Cost] = field(default_factory=dict)
    by_kernel: dict[str, Cost] = field(default_factory=dict)  # "arch/precision" -> cost (for device-hours)
    uncounted: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> Cost:
        total = Cost()
        for cost in self.by_method.values():
            total.add(cost)
        return total


def _sparsity(spec: JobSpec, results: Path) -> float | None:
    """The job's sparsity as a number, `found` resolved where IMC's analysis is done (else None)."""
    if spec.sparsity != FOUND:
        return spec.sparsity
    from bench.found import found_sparsity

    try:
        return found_sparsity(spec, results)
    except BenchError:
        return None


def job_cost(spec: JobSpec, results: Path, data: DataSettings, counted_stages: dict[str, Cost]) -> Cost | str:
    """The cost of one job: its own phases, and of its shared stages what `counted_stages` (stage ->
    epochs and test passes counted so far, updated here) does not hold yet; or why it cannot be counted."""
    from bench.jobs import train_settings_for
    from bench.settings_build import build_settings
    from methods.registry import get_method

    sizes = dataset_sizes(spec.dataset, data)
    if sizes is None:
        return f"the size of dataset {spec.dataset} is unknown without its files (pass --data-root)"
    method_class = get_method(spec.method)
    method = method_class(build_settings(method_class.Settings, spec.hparams, f"method {spec.method}"))
    phases = method.planned_phases(spec, train_settings_for(spec), _sparsity(spec, results))
    if phases is None:
        return "its rounds follow a sparsity found at run time (run IMC's analysis first)"
    train_size, test_size = sizes
    cost = Cost(jobs=1)
    for phase in phases:
        epochs, evaluations = phase.epochs, phase.evaluations
        if phase.stage is not None:
            counted = counted_stages.setdefault(phase.stage, Cost())
            epochs, evaluations = max(0, epochs - counted.epochs), max(0, evaluations - counted.evaluations)
            counted.epochs += epochs
            counted.evaluations += evaluations
        cost.add(Cost(epochs=epochs, train_passes=epochs * train_size, evaluations=evaluations,
                      eval_passes=evaluations * test_size))
    return cost


def grid_cost(planned: list[PlannedJob], results: Path, data: DataSettings | None = None) -> GridCost:
    """The cost of every job of the plan."""
    from bench.jobs import train_settings_for

    data = data or DataSettings()
    cost, stages = GridCost(), {}
    for job in planned:
        outcome = job_cost(job.spec, results, data, stages)
        if isinstance(outcome, str):
            cost.uncounted[job.job_id] = outcome
            continue
        cost.by_method.setdefault(job.spec.method, Cost()).add(outcome)
        kernel = throughput_key(job.spec.arch, train_settings_for(job.spec).precision)
        cost.by_kernel.setdefault(kernel, Cost()).add(outcome)
    return cost


@dataclass
class DeviceHours:
    """Device-hours of the measured part of a grid on one device, and what was not measured there."""

    device: str
    hours: float
    packed_hours: float | None = None
    jobs_per_device: int = 1
    unmeasured: dict[str, int] = field(default_factory=dict)  # "arch/precision" -> jobs
    used: dict[str, dict[str, Any]] = field(default_factory=dict)  # "arch/precision" -> the measurement used


def device_hours(cost: GridCost, device: str, measurements: dict[str, dict[str, Any]]) -> DeviceHours:
    """Hours on `device` from its stored measurements ("arch/precision" -> images/s)."""
    result = DeviceHours(device, 0.0)
    packed_hours = 0.0
    packings = []
    for kernel, part in cost.by_kernel.items():
        measured = measurements.get(kernel)
        if measured is None:
            result.unmeasured[kernel] = part.jobs
            continue
        result.used[kernel] = measured
        seconds = part.train_passes / measured["train_images_per_s"] + part.eval_passes / measured["eval_images_per_s"]
        result.hours += seconds / SECONDS_PER_HOUR
        packed = {int(jobs): rate for jobs, rate in measured.get("packed_images_per_s", {}).items()}
        if packed.get(1):
            best = max(packed, key=packed.get)
            packings.append(best)
            packed_hours += seconds / SECONDS_PER_HOUR * packed[1] / packed[best]
        else:
            packed_hours += seconds / SECONDS_PER_HOUR
    if packings:
        result.packed_hours, result.jobs_per_device = packed_hours, max(packings)
    return result


def format_cost(cost: GridCost, throughputs: dict[str, dict[str, dict[str, Any]]], perf_file: Path) -> str:
    """The cost table by method and in total, then device-hours on every device with a measurement."""
    rows = [_row(method, part) for method, part in sorted(cost.by_method.items())]
    rows.append(_row("total", cost.total))
    lines = ["", "cost (shared stages counted once; scoring and analysis passes not counted):",
             tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True)]
    if cost.uncounted:
        first = ", ".join(list(cost.uncounted)[:3])
        reasons = sorted(set(cost.uncounted.values()))
        lines.append(f"not counted: {len(cost.uncounted)} job(s) ({first}{', ...' if len(cost.uncounted) > 3 else ''})"
                     f": {'; '.join(reasons)}")
    if not throughputs:
        lines.append(f"device-hours: no throughput measured yet ({perf_file}); measure it on the device with "
                     "python -m bench.perf")
        return "\n".join(lines)
    lines.append(f"device-hours at the throughput measured by bench.perf ({perf_file}):")
    for device, measurements in sorted(throughputs.items()):
        hours = device_hours(cost, device, measurements)
        text = f"  {device}: {hours.hours:,.1f} h with 1 job per device"
        if hours.packed_hours is not None and hours.jobs_per_device > 1:
            text += f", {hours.packed_hours:,.1f} h with {hours.jobs_per_device} jobs per device"
        if hours.unmeasured:
            missing = ", ".join(f"{kernel} ({jobs} jobs)" for kernel, jobs in sorted(hours.unmeasured.items()))
            text += f"; not measured there: {missing}"
        lines.append(text)
        lines.extend(f"    {kernel}: {measured_where(measured)}" for kernel, measured in sorted(hours.used.items()))
    return "\n".join(lines)


def measured_where(measurement: dict[str, Any], host: str | None = None) -> str:
    """When, where and with what a stored throughput was measured; says so when it was another host."""
    host = host or socket.gethostname()
    when = measurement.get("measured", "at an unrecorded date")
    if "host" not in measurement:
        return (f"measured {when}, machine not recorded (stored before bench.perf recorded it); rerun "
                "python -m bench.perf on this machine to trust it")
    where = f"on {measurement['host']} ({measurement.get('machine', 'machine not recorded')})"
    versions = f", torch {measurement['torch']}" if "torch" in measurement else ""
    threads = f", {thread_count(int(measurement['threads']))}" if "threads" in measurement else ""
    elsewhere = "" if measurement["host"] == host else f"; NOT this machine ({host})"
    return f"measured {when} {where}{versions}{threads}{elsewhere}"


def _row(name: str, cost: Cost) -> dict[str, str]:
    return {"method": name, "jobs": f"{cost.jobs:,}", "epochs": f"{cost.epochs:,}",
            "training image-passes": f"{cost.train_passes:,}", "test passes": f"{cost.evaluations:,}",
            "evaluation image-passes": f"{cost.eval_passes:,}"}
