"""Terminal output while training: Lightning's progress bar on a terminal, one line per epoch when the output is
a file or a pipe (logs of batch jobs), and none of Lightning's banners (device lines, model-summary table, tips)
unless asked for with ``-v``."""

from __future__ import annotations

import logging
import sys

import pytorch_lightning as pl

LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
VERBOSE = {"level": 1}  # 0: quiet (warnings and errors), 1: default, 2: verbose (Lightning's own info lines)


def set_verbosity(level: int) -> None:
    """0 quiet (no progress or epoch lines), 1 default, 2 verbose (Lightning's info lines and model summary)."""
    VERBOSE["level"] = level
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if level >= 2 else logging.WARNING)


def verbosity() -> int:
    return VERBOSE["level"]


def on_terminal() -> bool:
    return sys.stderr.isatty()


class EpochLine(pl.Callback):
    """One line per finished epoch: loss, images/s, share of time waiting for data, monitored kNN and rank.

    Printed when the next epoch starts and at the end of training, once the epoch's logged values are final.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)
        self._pending = trainer.current_epoch

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self._pending is None or not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        parts = [f"epoch {self._pending + 1}/{trainer.max_epochs}"]
        if "train/loss_epoch" in m:
            parts.append(f"loss {m['train/loss_epoch']:.4g}")
        if "train/images_per_s" in m:
            parts.append(f"{m['train/images_per_s']:.0f} img/s")
        if "train/data_wait_share" in m:
            parts.append(f"data wait {100 * m['train/data_wait_share']:.0f}%")
        if "monitor/knn_top1" in m:
            parts.append(f"monitored kNN {100 * m['monitor/knn_top1']:.1f}%")
        if "monitor/effective_rank" in m:
            parts.append(f"rank {m['monitor/effective_rank']:.1f}")
        print(", ".join(parts), flush=True)
        self._pending = None
