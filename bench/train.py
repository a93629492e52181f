"""The one training loop every method uses: the paper's recipe, mask-aware, checkpointed, resumable.

Recipe (paper A.5, open_lth's defaults where the paper is silent): SGD, lr 0.1, momentum 0.9, weight
decay 1e-4 on every parameter, batch 100, 160 epochs, lr x0.1 at 1/2 and 3/4 of the epochs (stepped per
epoch). Training is split into named *phases* (e.g. "pretrain", "round3"). A phase checkpoints
atomically (model, optimizer, masks as bool, epoch, seconds, RNG state) to `ckpt/<phase>.pt` by wall
clock (every `checkpoint_interval_s`, default 5 minutes), when it ends, and when SLURM's requeue signal
arrives or the phase stops on an exception or Ctrl-C (`save_pending_checkpoints`: the state of the last
finished epoch, kept in memory; only a hard kill loses the epochs since the last checkpoint). SIGTERM
(`exit_keeping_last_epochs`) keeps every epoch `epochs.csv` shows: an epoch's row and its in-memory state
are committed as one step that the exit waits for; a finished
phase returns its final state at once, so a method written as straight-line code resumes where it was
interrupted and ends with the same numbers (an interrupted phase redoes the epochs after its last
checkpoint, from the same RNG state and data order).

Evaluation (the test pass) runs every `eval_every` epochs and always after the last epoch, whose
numbers are the ones reported; `epochs.csv` leaves the test columns of the other epochs empty. The test
batches come in the training batches' memory format (channels-last, see `bench.data.batches`).

On CUDA (`use_fast_kernels`, `optimizer_options`, `MODEL_MEMORY_FORMAT`): the model and the gradient
masks are channels-last (the batches already are), SGD is the fused kernel, and `cudnn.benchmark` picks
the convolution algorithms; the CPU path is unchanged. `precision = "bf16"` (opt-in, part of the job's
identity) runs the forward passes of training and evaluation under `torch.autocast` with bfloat16; the
weights, gradients and optimizer stay float32. It pays only on CPUs with AMX-BF16 or AVX512-BF16 and on
GPUs (`bench.cpu_support`, docs/performance.md).

`compile = True` (opt-in, part of the job's identity: Inductor's fused kernels round differently) runs the
forward passes of a phase through `torch.compile(model)`; the compiled module shares the model's
parameters, so masks, the optimizer, checkpoints (the plain model's state_dict) and resume are as without
it. It costs the compile time once per phase and process (twice: the training and the evaluation graph);
whether that pays is measured by `python -m bench.perf --measure compile`.

Masks: pruned weights are zeroed once when a phase starts (or its masks change), and after every
backward pass their gradients are multiplied by the mask (one fused `_foreach_mul_`). SGD's momentum
buffer and weight decay then see zero for those entries, so the weights stay *exactly* zero.

Data order and augmentation of epoch e come from `derive_seed(trial, "data", e)`: every method in a
trial sees the same batches at the same epoch (paired comparisons).

Masks that change during training (`mask_updater`, `bench.mask_updates`): at the iterations the updater
names, the mask changes after the backward pass (RigL: from the dense gradient, instead of the SGD
step) or after the SGD step (SET, GMP); the weights and momentum off the new mask are zeroed then. The
updater's state is checkpointed with the phase; iterations without an update add one host-side
comparison and no device sync.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from bench.atomic import CorruptFileError, file_mode, load_checked, save_checked, write_text
from bench.data import DeviceData
from bench.errors import BenchError, DivergedError
from bench.mask_updates import MaskUpdater
from bench.masks import Masks, apply_masks, prunable_parameters, sparsity_report
from bench.safe_paths import open_no_follow
from bench.seeds import derive_seed

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
"""Training precision -> the autocast dtype of the forward passes (None: plain float32)."""
MODEL_MEMORY_FORMAT = {"cuda": torch.channels_last}
"""Memory format of a trained model by device type (others: as built). The batches are channels-last on
every device; on the CPU the model stays as built, whose numbers the tests pin."""


MAX_EPOCHS = 100_000
"""The most epochs a run may ask for (a bound that turns a typo such as 1e14 into a one-line error)."""


@dataclass(frozen=True)
class TrainSettings:
    """The training recipe (paper A.5); any field can be overridden per job (`--epochs`, grids)."""

    epochs: int = field(default=160, metadata={"help": "training epochs of one full run"})
    lr: float = field(default=0.1, metadata={"help": "initial learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (open_lth's value)"})
    weight_decay: float = field(default=1e-4, metadata={"help": "weight decay on every parameter (open_lth)"})
    batch_size: int = field(default=100, metadata={"help": "training batch size (paper A.5)"})
    lr_drops: tuple[float, ...] = field(
        default=(0.5, 0.75), metadata={"help": "fractions of the epochs at which the lr is multiplied by lr_gamma",
                                       "minimum": 0.0, "maximum": 1.0}
    )
    lr_gamma: float = field(default=0.1, metadata={"help": "lr factor at each drop"})
    eval_every: int = field(
        default=10, metadata={"help": "test-set evaluation every N epochs (the last epoch is always evaluated)"})
    precision: str = field(
        default="fp32", metadata={"help": f"forward-pass precision: {', '.join(PRECISIONS)} (bf16: autocast; "
                                          "pays only on GPUs and CPUs with AMX/AVX512-BF16)"})
    compile: bool = field(
        default=False, metadata={"help": "run the forward passes through torch.compile (costs compile time once "
                                         "per phase; see python -m bench.perf --measure compile)"})

    def __post_init__(self) -> None:
        if not (0 <= self.epochs <= MAX_EPOCHS and self.batch_size >= 1 and self.eval_every >= 1):
            raise BenchError(f"training settings epochs = {self.epochs}, batch_size = {self.batch_size}, eval_every = "
                             f"{self.eval_every}; accepted: 0 <= epochs <= {MAX_EPOCHS}, batch_size >= 1, "
                             "eval_every >= 1")
        for name, value, low, high in (("lr", self.lr, 0.0, math.inf), ("momentum", self.momentum, 0.0, 1.0),
                                       ("weight_decay", self.weight_decay, 0.0, math.inf),
                                       ("lr_gamma", self.lr_gamma, 0.0, math.inf),
                                       *((f"lr_drops[{index}]", drop, 0.0, math.inf)
                                         for index, drop in enumerate(self.lr_drops))):  # > 1: past the phase
            if not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
                raise BenchError(f"training setting {name} = {value!r}; accepted: a finite number in [{low:g}, "
                                 f"{high:g}]")
        if self.precision not in PRECISIONS:
            raise BenchError(f"training precision {self.precision!r}; accepted: {', '.join(PRECISIONS)}")
        if not isinstance(self.compile, bool):
            raise BenchError(f"train.compile {self.compile!r}; accepted: true or false")
        object.__setattr__(self, "lr_drops", tuple(self.lr_drops))

    def evaluates_after(self, epoch: int) -> bool:
        """Whether (0-based) `epoch` ends with a test pass: every `eval_every`-th epoch and the last one."""
        return (epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs

    def evaluations(self, start_epoch: int = 0) -> int:
        """Test passes of a phase over epochs [start_epoch, epochs): a phase with no epoch left evaluates once."""
        if start_epoch >= self.epochs:
            return 1
        return sum(self.evaluates_after(epoch) for epoch in range(start_epoch, self.epochs))

    def milestones(self) -> list[int]:
        return [round(fraction * self.epochs) for fraction in self.lr_drops]

    def lr_at(self, epoch: int) -> float:
        """Learning rate of (0-based) `epoch` of this schedule."""
        drops = sum(1 for milestone in self.milestones() if epoch >= milestone)
        return self.lr * self.lr_gamma**drops


EPOCH_COLUMNS = [
    "phase", "epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_top5",
    "sparsity", "seconds",
]


DEFAULT_CHECKPOINT_INTERVAL_S = 300.0


class EpochLog:
    """`epochs.csv`: one row per trained epoch, flushed as it is written (test columns empty on epochs
    without evaluation), then handed to each listener (`bench.epoch_logs`: log lines, TensorBoard).

    When a phase starts, the file is rewritten atomically without that phase's rows past its
    checkpoint, so every epoch appears exactly once; a torn last row (a crash during the append) is
    dropped then, never fatal.
    """

    def __init__(self, path: Path, listeners: Sequence[Callable[[dict], None]] = ()):
        self.path = path
        self.listeners = tuple(listeners)

    def rows(self) -> list[dict]:
        """The complete rows of the file (a torn or foreign row is skipped)."""
        if not self.path.exists():
            return []
        with open(open_no_follow(self.path, os.O_RDONLY), newline="", errors="replace") as handle:
            return [row for row in csv.DictReader(handle) if _complete_row(row)]

    def drop_after(self, phase: str, epoch: int) -> None:
        """Forget rows of `phase` past `epoch` (written by an attempt that did not checkpoint them)."""
        if not self.path.exists():
            return
        rows = [row for row in self.rows() if not (row["phase"] == phase and int(row["epoch"]) > epoch)]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, EPOCH_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.path, buffer.getvalue())

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with open(open_no_follow(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, file_mode()), "a",
                  newline="") as handle:
            writer = csv.DictWriter(handle, EPOCH_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)
            handle.flush()
        for listener in self.listeners:
            listener(row)


def _complete_row(row: dict) -> bool:
    if None in row or any(row.get(column) is None for column in EPOCH_COLUMNS):
        return False
    try:
        int(row["epoch"])
        float(row["seconds"])
    except ValueError:
        return False
    return True


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    top5: float | None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward passes' precision context: `torch.autocast` for bf16, nothing for fp32."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def compiled(model: nn.Module, settings: TrainSettings) -> nn.Module:
    """The module the forward passes run through: `torch.compile(model)` when `settings.compile`, else the
    model itself. The compiled module shares the model's parameters (masks and the optimizer see the same
    tensors); checkpoints keep saving the plain model's state_dict. Shapes are static (`dynamic=False`): a
    ragged last batch compiles a graph of its own once instead of one symbolic graph for every size (a
    symbolic compile of ResNet-8 had not finished after 12 minutes on the loaded 2-core VM, 2026-12-06)."""
    if not settings.compile:
        return model
    on_cpu = any(parameter.device.type == "cpu" for parameter in model.parameters())
    if on_cpu and not cpp_compiler():
        raise BenchError("train.compile on the CPU needs a C++ compiler for Inductor's kernels (g++, clang++ or "
                         "$CXX on PATH), and none was found; accepted here: train.compile=false")
    return torch.compile(model, dynamic=False)


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU kernels would use ($CXX, else g++, c++ or clang++), or None."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((shutil.which(name) for name in names if shutil.which(name)), None)


def optimizer_options(device: torch.device) -> dict:
    """Extra SGD arguments by device: the fused kernel on CUDA (one launch for every parameter)."""
    return {"fused": True} if device.type == "cuda" else {}


def use_fast_kernels(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms for the (fixed) batch shapes and keep the fastest."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceData, precision: str = "fp32") -> Evaluation:
    """Test loss, top-1 and (for more than 10 classes) top-5 accuracy, BN in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=data.device)
    top1 = torch.zeros((), device=data.device)
    top5 = torch.zeros((), device=data.device)
    with_top5 = data.data.num_classes > 10
    for images, labels in data.test_batches():
        with autocast(data.device, precision):
            logits = model(images)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        top1 += (logits.argmax(1) == labels).sum()
        if with_top5:
            top5 += (logits.topk(5, dim=1).indices == labels[:, None]).any(1).sum()
    model.train(was_training)
    count = data.test_labels.numel()
    return Evaluation(
        loss=loss_sum.item() / count,
        accuracy=top1.item() / count,
        top5=top5.item() / count if with_top5 else None,
    )


@dataclass
class PhaseResult:
    """The end of a training phase; the model passed in holds the final weights."""

    masks: Masks | None
    evaluation: Evaluation
    epochs: int
    seconds: float


EpochHook = Callable[[int, nn.Module, Masks | None], Masks | None]
"""Called after each epoch with (epoch, model, masks); may return new masks (e.g. Flow&Prune)."""


_PENDING: dict[Path, dict] = {}
"""Checkpoint path -> the state of its phase's last finished epoch not yet on disk (this process)."""


def save_pending_checkpoints(*paths: Path) -> int:
    """Write the last finished epoch of the phases at `paths` (default: every phase in training; SLURM's
    requeue signal calls this); returns how many were written."""
    written = 0
    for path in paths or list(_PENDING):
        state = _PENDING.pop(path, None)
        if state is not None:
            write_checkpoint(path, state)
            written += 1
    return written


class _EpochCommit:
    """An epoch's row in `epochs.csv` and its pending checkpoint, written as one step for the exits that
    save (`exit_keeping_last_epochs`): a signal handled between the two is deferred to the step's end, and
    another thread waits for it, so a saved checkpoint covers every epoch its log shows."""

    def __init__(self):
        self.lock = threading.RLock()
        self.active = False
        self.deferred_exit: int | None = None

    @contextlib.contextmanager
    def step(self):
        self.active = True  # before taking the lock: a handler that runs from here on defers
        try:
            with self.lock:
                yield
        finally:
            self.active = False
        if self.deferred_exit is not None:
            exit_keeping_last_epochs(self.deferred_exit)


_EPOCH_COMMIT = _EpochCommit()


def exit_keeping_last_epochs(code: int) -> None:
    """Write the last finished epoch of every phase in training, then end the process at once with `code`
    (SIGTERM's handlers, a local worker whose parent died). Called by a signal handler while an epoch is
    being committed, it returns, and the commit's end exits."""
    if _EPOCH_COMMIT.active and threading.current_thread() is threading.main_thread():
        _EPOCH_COMMIT.deferred_exit = code
        return
    with _EPOCH_COMMIT.lock:  # another thread waits for the main thread's commit
        save_pending_checkpoints()
        os._exit(code)


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint before `ckpt/<phase>.pt` is kept: `ckpt/<phase>.previous.pt`."""
    return path.with_name(f"{path.stem}.previous.pt")


def write_checkpoint(path: Path, state: dict) -> None:
    """Checkpoint a phase (checksummed); the one before is kept as `<phase>.previous.pt`, the fallback
    when the latest turns out corrupt."""
    if path.exists():
        path.replace(previous_checkpoint(path))
    save_checked(path, state)


def load_latest_checkpoint(path: Path, map_location: torch.device | str, what: str) -> dict | None:
    """The latest good checkpoint at `path` (written by `write_checkpoint`): the last one, else the one
    before it, else None.

    A checkpoint that fails its checksum or holds more than tensors and numbers is set aside as
    `<name>.corrupt` (never unpickled with code), and `what` (e.g. "phase 'train'") resumes from the
    previous good checkpoint or restarts; the job's log says which.
    """
    fallback = previous_checkpoint(path)
    for candidate in (path, fallback):
        if not candidate.exists():
            continue
        try:
            return load_checked(candidate, map_location=map_location)
        except CorruptFileError as error:
            candidate.replace(candidate.with_name(candidate.name + ".corrupt"))
            then = (f"resuming {what} from the previous checkpoint {fallback.name}"
                    if candidate != fallback and fallback.exists() else f"restarting {what}")
            print(f"warning: {error}; set aside as {candidate.name}.corrupt, {then}", file=sys.stderr, flush=True)
    return None


class Trainer:
    """Trains models of one job: knows the data, the trial, the job's ckpt/ folder and epoch log."""

    def __init__(self, data: DeviceData, trial: int, ckpt_dir: Path, epoch_log: EpochLog, progress: bool | None = None,
                 checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S):
        self.data = data
        self.trial = trial
        self.ckpt_dir = ckpt_dir
        self.epoch_log = epoch_log
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.checkpoint_interval_s = checkpoint_interval_s
        use_fast_kernels(data.device)

    def sibling(self, folder: Path) -> Trainer:
        """A trainer with this one's data, trial, run options and epoch listeners (the job's log lines and
        TensorBoard), writing its checkpoints to `folder/ckpt` and its epochs to `folder/epochs.csv` (a stage)."""
        return Trainer(self.data, self.trial, Path(folder) / "ckpt",
                       EpochLog(Path(folder) / "epochs.csv", self.epoch_log.listeners), self.progress,
                       self.checkpoint_interval_s)

    def checkpoint_path(self, phase: str) -> Path:
        return self.ckpt_dir / f"{phase}.pt"

    def load_checkpoint(self, phase: str) -> dict | None:
        """The phase's latest good checkpoint (`load_latest_checkpoint`), or None."""
        return load_latest_checkpoint(self.checkpoint_path(phase), self.data.device, f"phase {phase!r}")

    def train(
        self,
        model: nn.Module,
        phase: str,
        settings: TrainSettings,
        masks: Masks | None = None,
        start_epoch: int = 0,
        on_epoch_end: EpochHook | None = None,
        stop_epoch: int | None = None,
        mask_updater: MaskUpdater | None = None,
    ) -> PhaseResult:
        """Train `model` in place over epochs [start_epoch, stop_epoch) of `settings`' schedule (default: to
        its end); the last epoch trained is always evaluated. With `mask_updater`, the mask is its live
        `masks` (`masks` must then be None) and changes at the iterations it names."""
        stop = settings.epochs if stop_epoch is None else stop_epoch
        memory_format = MODEL_MEMORY_FORMAT.get(self.data.device.type)
        if memory_format is not None:
            model.to(memory_format=memory_format)  # in place: the parameters stay the same objects
        optimizer = torch.optim.SGD(
            model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay,
            **optimizer_options(self.data.device),
        )
        if mask_updater is not None:
            if masks is not None:
                raise ValueError("pass the initial mask as the updater's masks, not as masks")
            masks = mask_updater.masks
        first_epoch, seconds = start_epoch, 0.0
        state = self.load_checkpoint(phase)
        if state is not None:
            model.load_state_dict(state["model"])
            masks = _float_masks(state["masks"], model)
            if mask_updater is not None:
                mask_updater.masks = masks
                mask_updater.load_state_dict(state["mask_updater"])
            if state["complete"]:
                return PhaseResult(masks, Evaluation(**state["evaluation"]), state["epochs"], state["seconds"])
            optimizer.load_state_dict(state["optimizer"])
            first_epoch, seconds = state["next_epoch"], state["seconds"]
            torch.set_rng_state(state["cpu_rng"])
        self.epoch_log.drop_after(phase, first_epoch - 1)
        forward = compiled(model, settings)
        forward.train()
        evaluation = evaluate(forward, self.data, settings.precision) if first_epoch >= stop else None
        epochs_iter = range(first_epoch, stop)
        if self.progress:
            from tqdm import tqdm

            epochs_iter = tqdm(epochs_iter, desc=phase, initial=first_epoch, total=stop, leave=False)
        path = self.checkpoint_path(phase)
        try:
            return self._train_epochs(model, forward, optimizer, phase, settings, masks, start_epoch, stop,
                                      seconds, evaluation, epochs_iter, on_epoch_end, path, mask_updater)
        except BaseException:  # a crash, Ctrl-C, or submitit's exit after a requeue: keep the last epoch
            save_pending_checkpoints(path)
            raise

    def _train_epochs(self, model, forward, optimizer, phase, settings, masks, start_epoch, stop, seconds,
                      evaluation, epochs_iter, on_epoch_end, path, mask_updater=None) -> PhaseResult:
        """The epochs of a phase; `forward` is the module the forward passes run through (`compiled`)."""
        weights = prunable_parameters(model)
        masked_weights, mask_list = self.mask_lists(model, masks)
        sparsity = sparsity_report(model, masks).sparsity
        last_saved = time.monotonic()
        for epoch in epochs_iter:
            started = time.perf_counter()
            lr = settings.lr_at(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum, correct = self.train_epoch(forward, optimizer, epoch, settings.batch_size, masked_weights,
                                                 mask_list, settings.precision, mask_updater, weights_of=model)
            if mask_updater is not None and mask_updater.masks is not masks:
                masks = mask_updater.masks
                masked_weights, mask_list = self.mask_lists(model, masks)
                sparsity = sparsity_report(model, masks).sparsity
            train_loss = loss_sum / self.data.train_size
            if not math.isfinite(train_loss):
                raise DivergedError(f"training loss became {train_loss} in phase {phase!r}, epoch {epoch} (lr {lr})")
            if on_epoch_end is not None:
                new_masks = on_epoch_end(epoch, model, masks)
                if new_masks is not None:
                    masks = new_masks
                    masked_weights, mask_list = self.mask_lists(model, masks)
                    self._zero_momentum(optimizer, weights, masks)
                    sparsity = sparsity_report(model, masks).sparsity
            tested = settings.evaluates_after(epoch) or epoch + 1 == stop
            if tested:
                evaluation = evaluate(forward, self.data, settings.precision)
            seconds += time.perf_counter() - started
            pending = None if epoch + 1 == stop else self._state(
                model, optimizer, masks, epoch + 1, seconds, None, complete=False, epochs=0, copy=True,
                mask_updater=mask_updater)
            with _EPOCH_COMMIT.step():
                self.epoch_log.append({
                    "phase": phase, "epoch": epoch, "lr": lr, "train_loss": train_loss,
                    "train_accuracy": correct / self.data.train_size,
                    "test_loss": evaluation.loss if tested else None,
                    "test_accuracy": evaluation.accuracy if tested else None,
                    "test_top5": evaluation.top5 if tested else None,
                    "sparsity": sparsity, "seconds": round(seconds, 3),
                })
                if pending is not None:
                    _PENDING[path] = pending
            if pending is not None:
                if time.monotonic() - last_saved >= self.checkpoint_interval_s:
                    save_pending_checkpoints(path)
                    last_saved = time.monotonic()
        epochs = stop - start_epoch
        _PENDING.pop(path, None)  # superseded: a later requeue signal must not write an older epoch over it
        # stopped before the schedule's end (a prefix, `stop_epoch`): unfinished, a later call continues it
        write_checkpoint(path, self._state(model, optimizer, masks, stop, seconds, evaluation,
                                           complete=stop == settings.epochs, epochs=epochs, mask_updater=mask_updater))
        return PhaseResult(masks, evaluation, epochs, seconds)

    def train_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, batch_size: int,
                    masked_weights: list[nn.Parameter], mask_list: list[torch.Tensor], precision: str = "fp32",
                    mask_updater: MaskUpdater | None = None, weights_of: nn.Module | None = None) -> tuple[float, int]:
        """One pass over the training set (the hot loop); returns (summed loss, correct predictions).

        The forward passes run through `model` (a `torch.compile`d module where `train.compile` is on);
        `weights_of` is the plain module whose named weights the masks name (default: `model`).

        Loss and accuracy accumulate on the device and are read once at the end, so the loop never
        waits for the device (except at the iterations where `mask_updater` changes the mask).
        """
        loss_sum = torch.zeros((), device=self.data.device)
        correct = torch.zeros((), device=self.data.device, dtype=torch.long)
        first_step = epoch * self.data.batches_per_epoch(batch_size)
        batches = self.data.train_batches(derive_seed(self.trial, "data", epoch), batch_size)
        for step, (images, labels) in enumerate(batches, start=first_step):
            with autocast(self.data.device, precision):
                logits = model(images)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            changes = mask_updater is not None and mask_updater.updates_at(step)
            if changes and mask_updater.replaces_step:  # RigL: the dense gradient picks growth; no SGD step
                masked_weights, mask_list = self._change_masks(mask_updater, step, weights_of or model, optimizer, True)
            else:
                if masked_weights:
                    torch._foreach_mul_([weight.grad for weight in masked_weights], mask_list)
                optimizer.step()
                if changes:
                    masked_weights, mask_list = self._change_masks(mask_updater, step, weights_of or model, optimizer,
                                                                   False)
            loss_sum += loss.detach() * labels.numel()
            correct += (logits.detach().argmax(1) == labels).sum()
        return loss_sum.item(), int(correct.item())

    def mask_lists(self, model: nn.Module, masks: Masks | None) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
        """Zero the pruned weights; return (masked weights, their masks in the weights' memory format) for the
        gradient multiply."""
        if masks is None:
            return [], []
        weights = prunable_parameters(model)
        apply_masks(model, masks)
        masked = [weights[name] for name in masks]
        return masked, [torch.empty_like(weight).copy_(mask) for weight, mask in zip(masked, masks.values(), strict=True)]

    def _change_masks(self, mask_updater: MaskUpdater, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                      dense_gradient: bool) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
        """Let `mask_updater` change the mask at `step`; zero the weights and momentum off the new mask."""
        weights = prunable_parameters(model)
        gradients = {name: weight.grad for name, weight in weights.items()} if dense_gradient else None
        masks = mask_updater.update(step, model, gradients)
        self._zero_momentum(optimizer, weights, masks)
        return self.mask_lists(model, masks)

    @staticmethod
    def _zero_momentum(optimizer: torch.optim.Optimizer, weights: dict[str, nn.Parameter], masks: Masks) -> None:
        for name, mask in masks.items():
            buffer = optimizer.state.get(weights[name], {}).get("momentum_buffer")
            if buffer is not None:
                buffer.mul_(mask)

    @staticmethod
    def _state(model, optimizer, masks, next_epoch, seconds, evaluation, complete, epochs, copy=False,
               mask_updater=None) -> dict:
        """A checkpoint of the phase (tensors and numbers only); `copy` detaches it from the live tensors
        (a pending checkpoint)."""
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "masks": None if masks is None else {name: mask.bool() for name, mask in masks.items()},
            "next_epoch": next_epoch,
            "seconds": seconds,
            "evaluation": None if evaluation is None else vars(evaluation),
            "complete": complete,
            "epochs": epochs,
            "cpu_rng": torch.get_rng_state(),
            "mask_updater": None if mask_updater is None else mask_updater.state_dict(),
        }
        return _copied(state) if copy else state


def _copied(value):
    """A deep copy of a checkpoint's tensors (cloned on their device) and containers."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copied(item) for item in value)
    return value


def _float_masks(stored: Masks | None, model: nn.Module) -> Masks | None:
    """Masks as the trainer uses them (0/1 in the weights' dtype) from a checkpoint's bool masks."""
    if stored is None:
        return None
    weights = prunable_parameters(model)
    return {name: mask.to(weights[name].dtype) for name, mask in stored.items()}
