"""A grid's cost before it runs: dataset sizes without loading, epochs and image-passes from what the
methods declare, shared stages counted once, device-hours from the throughput file, the dry-run output."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cost import device_hours, grid_cost
from bench.data import DataSettings, dataset_sizes
from bench.grid import plan_jobs
from bench.run import main as run_main
from bench.spec import FOUND, JobSpec
from bench.throughput import perf_path, read_throughputs, store_throughput

DIGITS_TRAIN, DIGITS_TEST = 1438, 359


def test_dataset_sizes_without_loading(digits, tmp_path: Path) -> None:
    assert dataset_sizes("digits") == (digits.train_labels.numel(), digits.test_labels.numel()) == (DIGITS_TRAIN,
                                                                                                     DIGITS_TEST)
    assert dataset_sizes("digits@300") == (300, DIGITS_TEST)
    assert dataset_sizes("cifar10@5k") == (5000, 10_000) and dataset_sizes("cifar100") == (50_000, 10_000)
    assert dataset_sizes("imagenet-sub@10k") == (10_000, 10_000)
    assert dataset_sizes("imagefolder") is None  # no root: unknown
    for split, count in (("train", 3), ("val", 2)):
        for index in range(count):
            path = tmp_path / split / f"class{index % 2}" / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    assert dataset_sizes("imagefolder", DataSettings(data_root=str(tmp_path))) == (3, 2)


def spec(method: str, sparsity: float | str | None = None, **hparams) -> JobSpec:
    return JobSpec(method, "digits", "resnet8", sparsity=sparsity, train={"epochs": 20}, hparams=hparams)


def test_epochs_and_image_passes_by_method_with_shared_stages_counted_once(tmp_path: Path) -> None:
    plan = plan_jobs([spec("dense"), spec("magnitude", 0.5), spec("lth-rewind", 0.19), spec("imc-reinit"),
                      spec("imc-rewind"), spec("lth-reinit", FOUND)], needs_analysis=("imc-reinit", "imc-rewind"))
    cost = grid_cost(plan, tmp_path)
    # the dense trajectory is one stage: the analysis job, which the plan puts first, counts IMC's
    # pretraining (its first 10 epochs, one test pass) and the record's test pass; the dense job the rest
    assert [job.spec.method for job in plan][0] == "imc-analysis"
    analysis, dense = cost.by_method["imc-analysis"], cost.by_method["dense"]
    assert (analysis.epochs, analysis.evaluations) == (10, 2)
    assert (dense.jobs, dense.epochs, dense.evaluations) == (1, 10, 1)  # epochs 10-19, a test pass at 20
    assert (dense.train_passes, dense.eval_passes) == (10 * DIGITS_TRAIN, 1 * DIGITS_TEST)
    assert cost.by_method["magnitude"].epochs == 20  # fine-tuning: its training is the trajectory
    assert cost.by_method["lth-rewind"].epochs == 2 * 20  # two pruning rounds (0.1, 0.19); round 0 is shared
    assert cost.by_method["imc-reinit"].epochs == cost.by_method["imc-rewind"].epochs == 20
    assert list(cost.uncounted) == [plan[-1].job_id] and "found at run time" in cost.uncounted[plan[-1].job_id]
    assert cost.total.epochs == 20 + 20 + 40 + 20 + 20
    assert cost.total.train_passes == cost.total.epochs * DIGITS_TRAIN


def test_device_hours_from_stored_throughput(tmp_path: Path) -> None:
    plan = plan_jobs([spec("dense"), JobSpec("dense", "digits", "resnet20", train={"epochs": 20})])
    cost = grid_cost(plan, tmp_path)
    path = tmp_path / "perf.json"
    store_throughput(path, "gpu-x", "resnet8", "fp32", {"train_images_per_s": 1438.0, "eval_images_per_s": 359.0,
                                                         "packed_images_per_s": {"1": 1000.0, "2": 1500.0}})
    hours = device_hours(cost, "gpu-x", read_throughputs(path)["gpu-x"])
    assert hours.hours == pytest.approx((20 + 2) / 3600)  # 20 s of training, 2 s of testing
    assert hours.jobs_per_device == 2 and hours.packed_hours == pytest.approx(hours.hours / 1.5)
    assert hours.unmeasured == {"resnet20/fp32": 1}


def test_dry_run_ends_with_the_cost(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    perf = tmp_path / "perf.json"
    store_throughput(perf, "cpu-test", "resnet8", "fp32", {"train_images_per_s": 100.0, "eval_images_per_s": 100.0})
    arguments = ["--methods", "dense,magnitude", "--dataset", "digits", "--arch", "resnet8", "--epochs", "20",
                 "--sparsity", "0.5", "--results", str(tmp_path / "results"), "--dry-run", "--perf-file", str(perf)]
    assert run_main(arguments) == 0
    output = capsys.readouterr().out
    total = next(line for line in output.splitlines() if line.startswith("| total"))
    # the dense run once (20 epochs, 2 test passes: magnitude's training is it), magnitude's fine-tuning
    assert f"| {40 * DIGITS_TRAIN:,} " in total and f"| {4 * DIGITS_TEST:,} " in total
    hours = (40 * DIGITS_TRAIN + 4 * DIGITS_TEST) / 100 / 3600
    assert f"cpu-test: {hours:,.1f} h with 1 job per device" in output
    assert perf_path(None, DataSettings(cache_dir=str(tmp_path))) == tmp_path / "perf.json"


def test_device_hours_name_the_file_machine_and_date_of_each_measurement(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    import socket

    perf = tmp_path / "perf.json"
    elsewhere = {"train_images_per_s": 100.0, "eval_images_per_s": 100.0, "measured": "2026-01-02T03:04:05+00:00",
                 "host": "colleagues-box", "machine": "Intel Xeon, 2 cores", "torch": "2.14.1", "threads": 1}
    store_throughput(perf, "cpu-elsewhere", "resnet8", "fp32", elsewhere)
    store_throughput(perf, "cpu-here", "resnet8", "fp32", elsewhere | {"host": socket.gethostname()})
    store_throughput(perf, "cpu-old", "resnet8", "fp32", {"train_images_per_s": 100.0, "eval_images_per_s": 100.0})
    arguments = ["--methods", "dense", "--dataset", "digits", "--arch", "resnet8", "--epochs", "2",
                 "--results", str(tmp_path / "results"), "--dry-run", "--perf-file", str(perf)]
    assert run_main(arguments) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(str(perf) in line for line in lines if line.startswith("device-hours"))
    where = {line.split(":")[0].strip(): lines[index + 1] for index, line in enumerate(lines) if line.startswith("  cpu-")}
    assert ("measured 2026-01-02T03:04:05+00:00 on colleagues-box (Intel Xeon, 2 cores), torch 2.14.1, 1 thread; "
            f"NOT this machine ({socket.gethostname()})") in where["cpu-elsewhere"]
    assert "NOT this machine" not in where["cpu-here"] and socket.gethostname() in where["cpu-here"]
    assert "machine not recorded" in where["cpu-old"]
