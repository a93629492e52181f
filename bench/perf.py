"""`python -m bench.perf`: what an epoch of a job costs (old settings beside new), packed GPUs, harness overhead.

`--measure` picks what runs (comma list; default `epoch`, plus `packing` on CUDA):

- `epoch`: a whole epoch of a job, through the real `Trainer.train`: training over `--train-images`
  (5,000) CIFAR-shaped images, the test pass over `--test-images` (10,000) where the settings evaluate,
  and the checkpoints, for `--job-epochs` epochs (default 10: one evaluation period), in one process,
  under two settings on the same model, data and device:
    old: a test pass every epoch (`eval_every = 1`), NCHW test batches of 1,000, a checkpoint every
         epoch (`checkpoint_interval_s = 0`): the loop before issue 11;
    new: the defaults (`eval_every = 10` and the last epoch, test batches in the training's memory
         format, 100 a batch on the CPU, checkpoints every 300 s and at the phase's end).
  It prints the wall seconds per epoch of each and new/old (the issue's target: <= 0.75), then one job's
  throughput at the new settings (training images/s from the epochs without a test pass, test images/s
  from one timed test pass), which it stores in the throughput file (`bench.throughput`) where
  `python -m bench.run --dry-run` turns a grid's image-passes into device-hours.
- `packing`: N = `--packing` (1, 2, 4, 8) processes train the same job at once on the device (after a
  warm-up epoch each, started together at a barrier); the aggregate training images/s at each N is
  printed and stored beside the single-job numbers (what `--jobs-per-gpu N` gains; with CUDA MPS when
  its daemon runs).
- `overhead`: the harness's training step against a bare PyTorch loop over pre-made tensors in the same
  precision and the same way (the same model, channels-last batches as the harness's, the forward pass and
  loss under the same autocast), and masked against dense (medians of `--repeats` x `--steps` steps;
  issue 2's targets harness/bare <= 1.05, masked/dense <= 1.03; the ratio of the fastest repeats is printed
  beside the medians' as the less disturbed one on a shared machine). A bare loop over NCHW tensors is shown
  beside it. (Before issue 19 this measure ignored `--precision`: both loops ran fp32 whatever was asked,
  so a bf16 run printed fp32 numbers.)
- `compile`: whether `train.compile` pays for a job: a training epoch over `--train-images` eager against
  compiled (`--compile-epochs` timed epochs each, after the compiled model's first epoch, whose extra time
  is the compile), and the evaluation graph's compile; then the seconds saved over a job of `--job-epochs`
  epochs against the seconds compiling costs (once per phase and process).
- `report`: `bench.report --all-jobs` and `bench.status`, each in a fresh process, on `--folders` job
  folders (default 10,000: the bare default grid's finished jobs copied over new trials, made once in
  `--folders-dir`) and on half as many: wall seconds, seconds per 1,000 folders (flat when the cost is
  linear) and peak memory (`bench.report_scale`).

`--precision` takes a comma list (`fp32,bf16`): every measure runs in each precision, one after the other
on the same data, and the end prints bf16's speed against fp32's (the epoch's with its test passes, and the
training step's). On the CPU the first line says whether the CPU has fast bf16 (`bench.cpu_support`: AMX-BF16
or AVX512-BF16) and which precision to use. Synthetic pixels are fine: the cost of a step does not depend on
them.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from bench.cli import guarded, resolve_device
from bench.cpu_support import bf16_support
from bench.data import DeviceData, ImageData
from bench.devices import device_name, thread_count
from bench.errors import BenchError
from bench.masks import global_mask, magnitude_scores
from bench.models import ModelInput, build_model
from bench.throughput import (
    machine_description,
    perf_path,
    read_throughputs,
    store_throughput,
    throughput_key,
)
from bench.train import (
    MODEL_MEMORY_FORMAT,
    PRECISIONS,
    EpochLog,
    Trainer,
    TrainSettings,
    autocast,
    compiled,
    evaluate,
    optimizer_options,
)

MEASURES = ("epoch", "packing", "overhead", "compile", "report")
OLD_EVAL_BATCH_SIZE = 1000
EPOCH_TARGET = 0.75


def synthetic_cifar(train_count: int, test_count: int = 100, seed: int = 0) -> ImageData:
    """CIFAR-shaped uint8 data (random pixels): the cost of a step does not depend on the pixels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (train_count + test_count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (train_count + test_count,), generator=generator)
    return ImageData(images[:train_count], labels[:train_count], images[train_count:], labels[train_count:], 10,
                     (0.5,) * 3, (0.25,) * 3, augment=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--measure", help=f"comma list of {', '.join(MEASURES)} (default: epoch, and packing on CUDA)")
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32",
                        help=f"comma list of training precisions, each measured in turn: {', '.join(PRECISIONS)}")
    parser.add_argument("--train-images", type=int, default=5000, help="training-set size of the timed job")
    parser.add_argument("--test-images", type=int, default=10000, help="test-set size of the timed job")
    parser.add_argument("--job-epochs", type=int, default=10, help="epochs of the timed job, per setting")
    parser.add_argument("--packing", default="1,2,4,8", help="jobs per device of the packing measurement")
    parser.add_argument("--packing-epochs", type=int, default=2, help="timed training epochs per packed job")
    parser.add_argument("--perf-file", help="throughput file (default: perf.json in the cache folder)")
    parser.add_argument("--steps", type=int, default=20, help="overhead: training steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=7, help="overhead: timed epochs per variant (median)")
    parser.add_argument("--compile-epochs", type=int, default=2, help="compile: timed epochs, eager and compiled")
    parser.add_argument("--folders", type=int, default=10_000,
                        help="report: job folders the report and status are timed on (and half as many)")
    parser.add_argument("--folders-dir", help="report: where the job folders are made and kept for reuse "
                                              "(default: report-scale/ in the cache folder)")
    return parser


@guarded
def main(argv: list[str] | None = None) -> int:
    args = main_parser().parse_args(argv)
    device = torch.device(resolve_device(args.device))
    measures = _measures(args.measure, device)
    precisions = _precisions(args.precision)
    packing = _packing(args.packing) if "packing" in measures else []
    torch.set_num_threads(args.threads)
    name = device_name(device)
    print(f"device {device} ({name}), {thread_count(args.threads)}, {args.arch}, batch {args.batch_size}, "
          f"{', '.join(precisions)}, torch {torch.__version__}")
    if device.type == "cpu":
        print(bf16_support().advice())
    measured: dict[str, dict] = {}
    steps: dict[str, float] = {}
    for precision in precisions:
        measurement: dict = {}
        if "epoch" in measures:
            measurement |= measure_epoch(args, device, precision)
        if "packing" in measures:
            measurement |= {"packed_images_per_s": measure_packing(args, device, packing, precision)}
        if "overhead" in measures:
            steps[precision] = measure_overhead(args, device, precision)
        if "compile" in measures:
            measure_compile(args, device, precision)
        if measurement:
            measured[precision] = measurement
            _store(args, name, precision, measurement)
    _compare_precisions(measured, steps)
    if "report" in measures:
        measure_report(args)
    return 0


def measure_report(args: argparse.Namespace) -> None:
    """`bench.report --all-jobs` and `bench.status` on `--folders` job folders and half as many (`bench.report_scale`)."""
    from bench.data_settings import DataSettings
    from bench.report_scale import TARGETS, measure

    if args.folders < 2:
        raise BenchError(f"--folders {args.folders}; accepted: an integer >= 2")
    work = Path(args.folders_dir or DataSettings().resolved_cache_dir() / "report-scale")
    rows = measure(args.folders, work)
    print("| job folders | command | seconds | seconds per 1,000 folders | peak memory (MB) | target at 10,000 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['folders']:,} | {row['command']} | {row['seconds']:.1f} | {row['seconds_per_1k']:.2f} | "
              f"{row['peak_mb']:.0f} | {TARGETS[row['command']]} |")


def _store(args: argparse.Namespace, name: str, precision: str, measurement: dict) -> None:
    """Add a precision's measurement to the throughput file, with the machine, date and settings it was taken on."""
    path = perf_path(args.perf_file)
    key = throughput_key(args.arch, precision)
    earlier = read_throughputs(path).get(name, {}).get(key, {})
    measurement = measurement | {
        "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "host": socket.gethostname(),
        "machine": machine_description(), "torch": torch.__version__, "threads": args.threads,
        "batch_size": args.batch_size}
    store_throughput(path, name, args.arch, precision, earlier | measurement)
    print(f"stored in {path} under {name!r}, {key}")


def _compare_precisions(measured: dict[str, dict], steps: dict[str, float]) -> None:
    """bf16 against fp32 where both were measured: epochs (test passes included), training images/s, steps."""
    if "fp32" not in measured and "fp32" not in steps:
        return
    for precision in [item for item in (measured.keys() | steps.keys()) if item != "fp32"]:
        print(f"{precision} against fp32 (higher is faster; issue 19's target on a CPU with AMX: >= 1.8):")
        if precision in measured and "fp32" in measured:
            new, base = measured[precision], measured["fp32"]
            print(f"  whole epoch, test passes included: {base['epoch_s_new'] / new['epoch_s_new']:.2f}x")
            print(f"  training images/s: {new['train_images_per_s'] / base['train_images_per_s']:.2f}x")
        if precision in steps and "fp32" in steps:
            print(f"  harness training step: {steps['fp32'] / steps[precision]:.2f}x")


def _precisions(text: str) -> list[str]:
    chosen = list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    unknown = [item for item in chosen if item not in PRECISIONS]
    if unknown or not chosen:
        raise BenchError(f"--precision {text!r}; accepted: a comma list of {', '.join(PRECISIONS)}")
    return chosen


def _measures(text: str | None, device: torch.device) -> list[str]:
    if text is None:
        return ["epoch", "packing"] if device.type == "cuda" else ["epoch"]
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = sorted(set(chosen) - set(MEASURES))
    if unknown or not chosen:
        raise BenchError(f"--measure {text!r}; accepted: a comma list of {', '.join(MEASURES)}")
    return chosen


def _packing(text: str) -> list[int]:
    try:
        counts = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise BenchError(f"--packing {text!r}; accepted: a comma list of integers >= 1, e.g. 1,2,4,8")
    return sorted(set(counts) | {1})


# --- epoch: old settings beside new -----------------------------------------------------------------


def _job_data(args: argparse.Namespace, device: torch.device, old: bool) -> DeviceData:
    data = DeviceData(synthetic_cifar(args.train_images, args.test_images), device,
                      eval_batch_size=OLD_EVAL_BATCH_SIZE if old else None)
    if old:
        data.test_images = data.test_images.contiguous()  # NCHW, as before the test batches followed training
    return data


@dataclass
class TimedPhase:
    seconds: float
    trainer: Trainer
    model: torch.nn.Module


def _timed_phase(args: argparse.Namespace, data: DeviceData, settings: TrainSettings, interval_s: float | None,
                 folder: Path) -> TimedPhase:
    """Wall seconds of one training phase of a fresh model (checkpoints and epochs.csv in `folder`)."""
    options = {} if interval_s is None else {"checkpoint_interval_s": interval_s}
    trainer = Trainer(data, 0, folder / "ckpt", EpochLog(folder / "epochs.csv"), progress=False, **options)
    model = build_model(args.arch, ModelInput(3, 10, 32), seed=0).to(data.device)
    _sync(data.device)
    started = time.perf_counter()
    trainer.train(model, "train", settings)
    _sync(data.device)
    return TimedPhase(time.perf_counter() - started, trainer, model)


def _training_epoch_seconds(log: Path) -> float | None:
    """Median seconds of the epochs without a test pass (from the cumulative `seconds` of epochs.csv)."""
    rows = list(csv.DictReader(log.open()))
    durations, previous = [], 0.0
    for row in rows:
        seconds = float(row["seconds"])
        if not row["test_accuracy"]:
            durations.append(seconds - previous)
        previous = seconds
    return statistics.median(durations) if durations else None


def measure_epoch(args: argparse.Namespace, device: torch.device, precision: str) -> dict:
    """Per-epoch wall time of the job under the old and the new settings, and the new throughput."""
    if args.job_epochs < 1:
        raise BenchError(f"--job-epochs {args.job_epochs}; accepted: an integer >= 1")
    scratch = Path(tempfile.mkdtemp(prefix="prunebench-perf-"))
    new_data, old_data = _job_data(args, device, old=False), _job_data(args, device, old=True)
    recipe = TrainSettings(epochs=args.job_epochs, batch_size=args.batch_size, precision=precision)
    old_recipe = replace(recipe, eval_every=1)
    for name, data in (("old", old_data), ("new", new_data)):  # first-call costs (kernel choice, caches)
        _timed_phase(args, data, replace(recipe, epochs=1), None, scratch / f"warm-up-{name}")
    old = _timed_phase(args, old_data, old_recipe, 0.0, scratch / "old")
    new = _timed_phase(args, new_data, recipe, None, scratch / "new")
    old_epoch, new_epoch = old.seconds / args.job_epochs, new.seconds / args.job_epochs
    print(f"one job ({precision}): {args.train_images} training images, {args.test_images} test images, "
          f"{args.job_epochs} epochs")
    print(f"  old settings (a test pass and a checkpoint every epoch, NCHW test batches of {OLD_EVAL_BATCH_SIZE}): "
          f"{old_epoch:.2f} s/epoch")
    print(f"  new defaults (a test pass every {recipe.eval_every} epochs and the last, test batches in the "
          f"training's format, checkpoints by wall clock): {new_epoch:.2f} s/epoch")
    print(f"  new/old = {new_epoch / old_epoch:.3f}  (target <= {EPOCH_TARGET}: at least 25% less per epoch)")

    train_seconds = _training_epoch_seconds(new.trainer.epoch_log.path)
    if train_seconds is None:  # every epoch evaluated: time one training epoch by itself
        optimizer = torch.optim.SGD(new.model.parameters(), lr=0.01, momentum=0.9, **optimizer_options(device))
        started = time.perf_counter()
        new.trainer.train_epoch(new.model, optimizer, 0, args.batch_size, [], [], precision)
        _sync(device)
        train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    evaluate(new.model, new_data, precision)
    _sync(device)
    eval_seconds = time.perf_counter() - started
    rates = {"train_images_per_s": args.train_images / train_seconds,
             "eval_images_per_s": args.test_images / eval_seconds}
    print(f"  one job at the new settings: {rates['train_images_per_s']:,.0f} training images/s, "
          f"{rates['eval_images_per_s']:,.0f} test images/s")
    return rates | {"epoch_s_old": old_epoch, "epoch_s_new": new_epoch, "job_epochs": args.job_epochs,
                    "train_images": args.train_images, "test_images": args.test_images}


# --- packing: N jobs on one device ------------------------------------------------------------------


def _packed_job(args: argparse.Namespace, device: str, threads: int, precision: str, barrier, results) -> None:
    """One of N processes: warm up one epoch, wait for the others, time `packing_epochs` training epochs."""
    torch.set_num_threads(threads)
    data = DeviceData(synthetic_cifar(args.train_images, 100), device)
    folder = Path(tempfile.mkdtemp(prefix="prunebench-pack-"))
    trainer = Trainer(data, 0, folder, EpochLog(folder / "epochs.csv"), progress=False)
    model = build_model(args.arch, ModelInput(3, 10, 32), seed=0).to(data.device)
    model.to(memory_format=MODEL_MEMORY_FORMAT.get(data.device.type, torch.preserve_format))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **optimizer_options(data.device))
    trainer.train_epoch(model, optimizer, 0, args.batch_size, [], [], precision)
    _sync(data.device)
    barrier.wait()
    started = time.perf_counter()
    for epoch in range(args.packing_epochs):
        trainer.train_epoch(model, optimizer, epoch, args.batch_size, [], [], precision)
    _sync(data.device)
    results.put(time.perf_counter() - started)


def measure_packing(args: argparse.Namespace, device: torch.device, counts: list[int], precision: str
                    ) -> dict[str, float]:
    """Aggregate training images/s with N processes training at once on `device`, for each N in `counts`."""
    context = multiprocessing.get_context("spawn")
    aggregate: dict[str, float] = {}
    print(f"packing ({precision}): {args.packing_epochs} training epochs of {args.train_images} images per job")
    for count in counts:
        barrier, results = context.Barrier(count), context.Queue()
        threads = max(1, args.threads // count) if device.type == "cpu" else args.threads
        processes = [context.Process(target=_packed_job, args=(args, str(device), threads, precision, barrier,
                                                                            results))
                     for _ in range(count)]
        for process in processes:
            process.start()
        walls = [results.get() for _ in processes]
        for process in processes:
            process.join()
        if any(process.exitcode != 0 for process in processes):
            raise BenchError(f"a packed job exited with {[process.exitcode for process in processes]}")
        aggregate[str(count)] = count * args.packing_epochs * args.train_images / max(walls)
        print(f"  {count} job(s) per device: {aggregate[str(count)]:,.0f} training images/s in all "
              f"({aggregate[str(count)] / aggregate['1']:.2f}x one job)")
    return aggregate


# --- overhead: harness vs bare PyTorch, masked vs dense ----------------------------------------------


def measure_overhead(args: argparse.Namespace, device: torch.device, precision: str) -> float:
    """The harness's step against a bare loop in the same precision and the same way, and masked against
    dense (issue 2); returns the harness's median seconds per step."""
    data = DeviceData(synthetic_cifar(args.steps * args.batch_size), device)
    model = build_model(args.arch, ModelInput(3, 10, 32), seed=0).to(device).train()
    model.to(memory_format=MODEL_MEMORY_FORMAT.get(device.type, torch.preserve_format))  # as `Trainer.train`
    settings = TrainSettings()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=settings.momentum,
                                weight_decay=settings.weight_decay, **optimizer_options(device))
    scratch = Path(tempfile.mkdtemp(prefix="prunebench-perf-"))
    trainer = Trainer(data, trial=0, ckpt_dir=scratch, epoch_log=EpochLog(scratch / "epochs.csv"), progress=False)
    # the harness's batches: channels-last uint8 images, normalised to float (bench.data.batches)
    premade = [(data.normalise(data.train_images[start : start + args.batch_size]).contiguous(
                    memory_format=torch.channels_last), data.train_labels[start : start + args.batch_size])
               for start in range(0, data.train_size, args.batch_size)]
    premade_nchw = [(images.contiguous(), labels) for images, labels in premade]
    masks = global_mask(magnitude_scores(model), 0.5)
    masked_weights, mask_list = trainer.mask_lists(model, masks)

    def bare_loop(batches) -> None:
        for images, labels in batches:
            with autocast(device, precision):
                loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(device)

    def harness(weights: list, weight_masks: list) -> None:
        trainer.train_epoch(model, optimizer, 0, args.batch_size, weights, weight_masks, precision)
        _sync(device)

    variants = {
        "bare": lambda: bare_loop(premade),
        "bare-nchw": lambda: bare_loop(premade_nchw),
        "harness": lambda: harness([], []),
        "masked": lambda: harness(masked_weights, mask_list),
    }
    for run in variants.values():  # warm-up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # the variants alternate, so drift in the machine's speed hits all alike
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            seconds[name].append((time.perf_counter() - started) / args.steps)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"overhead ({precision}): {args.steps} steps x {args.repeats} repeats")
    for name, value in median.items():
        print(f"  {name:9s} {1000 * value:8.1f} ms/step, {args.batch_size / value:7,.0f} images/s (median; spread "
              f"{1000 * min(seconds[name]):.1f}-{1000 * max(seconds[name]):.1f} ms)")
    fastest = {name: min(values) for name, values in seconds.items()}  # the least disturbed: a shared machine
    print(f"  harness/bare = {median['harness'] / median['bare']:.3f} median, {fastest['harness'] / fastest['bare']:.3f}"
          f" fastest  (target <= 1.05; the bare loop in {precision} over the harness's channels-last batches)")
    print(f"  masked/dense = {median['masked'] / median['harness']:.3f} median, "
          f"{fastest['masked'] / fastest['harness']:.3f} fastest  (target <= 1.03)")
    return median["harness"]


# --- compile: does torch.compile pay for a job? -----------------------------------------------------


def _timed(run, device: torch.device) -> float:
    started = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - started


def measure_compile(args: argparse.Namespace, device: torch.device, precision: str) -> dict[str, float]:
    """Compile seconds (training and evaluation graphs) against the seconds `train.compile` saves per epoch."""
    if args.compile_epochs < 1:
        raise BenchError(f"--compile-epochs {args.compile_epochs}; accepted: an integer >= 1")
    data = DeviceData(synthetic_cifar(args.train_images, args.test_images), device)
    scratch = Path(tempfile.mkdtemp(prefix="prunebench-perf-"))
    trainer = Trainer(data, 0, scratch, EpochLog(scratch / "epochs.csv"), progress=False)
    seconds: dict[str, dict[str, float]] = {}
    for name in ("eager", "compiled"):
        model = build_model(args.arch, ModelInput(3, 10, 32), seed=0).to(device)
        model.to(memory_format=MODEL_MEMORY_FORMAT.get(device.type, torch.preserve_format))
        forward = compiled(model, TrainSettings(compile=name == "compiled")).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **optimizer_options(device))

        def epoch(forward=forward, optimizer=optimizer) -> None:
            trainer.train_epoch(forward, optimizer, 0, args.batch_size, [], [], precision)

        first = _timed(epoch, device)
        first_eval = _timed(lambda forward=forward: evaluate(forward, data, precision), device)
        timed = [_timed(epoch, device) for _ in range(args.compile_epochs)]
        later_eval = _timed(lambda forward=forward: evaluate(forward, data, precision), device)
        seconds[name] = {"first": first, "epoch": statistics.median(timed), "first_eval": first_eval,
                         "eval": later_eval}
    eager, fast = seconds["eager"], seconds["compiled"]
    compile_s = (fast["first"] - fast["epoch"]) - (eager["first"] - eager["epoch"]) + fast["first_eval"] - fast["eval"]
    saved = eager["epoch"] - fast["epoch"]
    job_saved = saved * args.job_epochs
    print(f"compile ({precision}): {args.train_images} training images, {args.test_images} test images, "
          f"median of {args.compile_epochs} epochs")
    print(f"  eager    {eager['epoch']:8.2f} s/epoch, test pass {eager['eval']:.2f} s")
    print(f"  compiled {fast['epoch']:8.2f} s/epoch, test pass {fast['eval']:.2f} s; compiling took "
          f"{compile_s:.1f} s (training and evaluation graphs, once per phase and process)")
    verdict = "pays" if job_saved > compile_s else "does NOT pay"
    print(f"  a job of {args.job_epochs} epochs saves {job_saved:.1f} s against {compile_s:.1f} s compiling: "
          f"train.compile {verdict} here" + (f" (break-even after {compile_s / saved:.1f} epochs)" if saved > 0 else ""))
    return {"compile_s": compile_s, "saved_s_per_epoch": saved}


if __name__ == "__main__":
    sys.exit(main())
