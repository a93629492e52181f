"""`python -m bench.perf`: what the harness costs over bare PyTorch, and what masks cost.

In one process, on one model, batch size and thread count, it times
  (a) the harness's training epoch (`Trainer.train_epoch`: batches cut, cropped, flipped and
      normalised on the device, masked-gradient multiply off) against a bare PyTorch loop over
      pre-made, already normalised tensors (forward, loss, backward, SGD step: nothing else);
  (b) the harness epoch with a 50%-sparse global mask against the same epoch dense.
The batched crop returns channels-last tensors (it gathers pixels as (N, H, W, C)), which oneDNN's CPU
convolutions run faster than NCHW; `bare-cl` feeds the bare loop the same layout, so the harness's own
overhead is harness/bare-cl.
Each measurement is repeated; the runs of the variants alternate so that drift in the machine's
speed hits all alike, and the medians are compared. Targets (issue 2): harness/bare <= 1.05 and
masked/dense <= 1.03 for ResNet-20 at batch 100 on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from bench.cli import guarded, resolve_device
from bench.data import DeviceData, ImageData
from bench.masks import global_mask, magnitude_scores
from bench.models import ModelInput, build_model
from bench.train import EpochLog, Trainer, TrainSettings


def synthetic_cifar(count: int, seed: int = 0) -> ImageData:
    """CIFAR-shaped uint8 data (random pixels): the cost of a step does not depend on the pixels."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return ImageData(images, labels, images[:100], labels[:100], 10, (0.5,) * 3, (0.25,) * 3, augment=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=7, help="timed epochs per variant (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epoch-images", type=int, default=0,
                        help="also time one full harness epoch over this many images (e.g. 50000 for CIFAR-10)")
    return parser


@guarded
def main(argv: list[str] | None = None) -> int:
    args = main_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    data = DeviceData(synthetic_cifar(args.steps * args.batch_size), device)
    model = build_model(args.arch, ModelInput(3, 10, 32), seed=0).to(device).train()
    settings = TrainSettings()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    scratch = Path(tempfile.mkdtemp(prefix="prunebench-perf-"))
    trainer = Trainer(data, trial=0, ckpt_dir=scratch, epoch_log=EpochLog(scratch / "epochs.csv"), progress=False)
    premade = [(data.normalise(data.train_images[start : start + args.batch_size]),
                data.train_labels[start : start + args.batch_size])
               for start in range(0, data.train_size, args.batch_size)]
    masks = global_mask(magnitude_scores(model), 0.5)
    masked_weights, mask_list = trainer.mask_lists(model, masks)

    premade_channels_last = [(images.contiguous(memory_format=torch.channels_last), labels)
                             for images, labels in premade]

    def bare_loop(batches) -> None:
        for images, labels in batches:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(device)

    def bare() -> None:
        bare_loop(premade)

    def bare_channels_last() -> None:
        bare_loop(premade_channels_last)

    def harness_dense() -> None:
        trainer.train_epoch(model, optimizer, 0, args.batch_size, [], [])

    def harness_masked() -> None:
        trainer.train_epoch(model, optimizer, 0, args.batch_size, masked_weights, mask_list)

    variants = {"bare": bare, "bare-cl": bare_channels_last, "harness": harness_dense, "masked": harness_masked}
    for run in variants.values():  # warm-up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            seconds[name].append((time.perf_counter() - started) / args.steps)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{args.threads} threads, {args.arch}, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats")
    for name, value in median.items():
        print(f"  {name:8s} {1000 * value:8.1f} ms/step (median; spread {1000 * min(seconds[name]):.1f}-"
              f"{1000 * max(seconds[name]):.1f})")
    print(f"  harness/bare  = {median['harness'] / median['bare']:.3f}  (target <= 1.05)")
    print(f"  harness/bare-cl = {median['harness'] / median['bare-cl']:.3f}  (the same loop fed channels-last "
          "tensors, the memory layout the batched crop produces)")
    print(f"  masked/dense  = {median['masked'] / median['harness']:.3f}  (target <= 1.03)")
    if args.epoch_images:
        full = DeviceData(synthetic_cifar(args.epoch_images), device)
        epoch_trainer = Trainer(full, 0, scratch, EpochLog(scratch / "epochs.csv"), progress=False)
        started = time.perf_counter()
        epoch_trainer.train_epoch(model, optimizer, 0, args.batch_size, [], [])
        _sync(device)
        print(f"  one training epoch over {args.epoch_images} images: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
