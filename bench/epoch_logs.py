"""Where a job's epochs are reported besides `epochs.csv`: log lines and (optionally) TensorBoard.

The training loop writes each epoch's row to `bench.train.EpochLog`, which hands it to these
listeners:
- `EpochLine`: when stderr is not a terminal (SLURM logs, `2> file`), one line every `every` epochs
  with the job, phase, epoch, lr, train loss/accuracy and, on epochs with a test pass
  (`train.eval_every`), test loss/accuracy. On a terminal the tqdm
  bar shows the same, so no line is printed.
- `TensorBoardLog` (`--log tensorboard`, the optional extra `prunebench[tensorboard]`): every row's
  metrics as scalars `<phase>/<metric>` at step = epoch, in `<job folder>/tensorboard/`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from bench.errors import BenchError

EpochListener = Callable[[dict[str, Any]], None]
LOGGERS = ("tensorboard",)
TENSORBOARD_FOLDER = "tensorboard"
SCALARS = ("lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_top5", "sparsity")


class EpochLine:
    """Prints one line at epochs every, 2 x every, ... (counted from 1) of each phase to `stream`."""

    def __init__(self, job_id: str, every: int, stream: TextIO | None = None):
        self.job_id, self.every = job_id, every
        self.stream = stream or sys.stderr

    def __call__(self, row: dict[str, Any]) -> None:
        epoch = int(row["epoch"]) + 1
        if epoch % self.every:
            return
        tested = "" if row.get("test_accuracy") is None else \
            f"test loss {row['test_loss']:.4f}, test acc {100 * row['test_accuracy']:.2f}%, "
        print(f"{self.job_id} {row['phase']} epoch {epoch}: lr {row['lr']:.3g}, train loss {row['train_loss']:.4f}, "
              f"train acc {100 * row['train_accuracy']:.2f}%, {tested}{row['seconds']:.1f}s", file=self.stream, flush=True)


class TensorBoardLog:
    """Every epoch row as TensorBoard scalars, flushed at once (a killed job keeps what it logged)."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(folder) / TENSORBOARD_FOLDER))

    def __call__(self, row: dict[str, Any]) -> None:
        for name in SCALARS:
            if row.get(name) is not None:
                self.writer.add_scalar(f"{row['phase']}/{name}", float(row[name]), int(row["epoch"]))
        self.writer.flush()


def check_loggers(names: tuple[str, ...]) -> None:
    """Fail before any job runs on an unknown logger or a missing optional package."""
    unknown = sorted(set(names) - set(LOGGERS))
    if unknown:
        raise BenchError(f"unknown --log {', '.join(unknown)}; accepted: {', '.join(LOGGERS)}")
    if "tensorboard" in names:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise BenchError("--log tensorboard needs the tensorboard package; accepted: "
                             "pip install 'prunebench[tensorboard]', or no --log") from None


def epoch_listeners(job_id: str, folder: Path, log_every: int, loggers: tuple[str, ...],
                    terminal: bool | None = None) -> list[EpochListener]:
    """The listeners of one job: a log line every `log_every` epochs off a terminal, and `loggers`."""
    listeners: list[EpochListener] = []
    terminal = sys.stderr.isatty() if terminal is None else terminal
    if log_every > 0 and not terminal:
        listeners.append(EpochLine(job_id, log_every))
    if "tensorboard" in loggers:
        listeners.append(TensorBoardLog(folder))
    return listeners
