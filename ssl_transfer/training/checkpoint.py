"""Checkpoints: atomic writes (temp file, fsync, rename), ``weights_only=True`` loads, and when to write.

``last.ckpt`` is rewritten at every epoch end and, mid-epoch, every N optimizer steps and/or every M
minutes; it holds everything an exact resume needs (see :mod:`ssl_transfer.training.module`). The one it
replaces is kept as ``previous.ckpt``, so that a ``last.ckpt`` damaged after it was written (a full disk, a
partial copy) still leaves a checkpoint to resume from: :func:`resume_checkpoint` verifies and falls back.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ssl_transfer.errors import UserError

log = logging.getLogger("ssl_transfer")
LAST, PREVIOUS = "last.ckpt", "previous.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """A kill during a save leaves the previous checkpoint file intact and loadable."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            if path.name == LAST and path.is_file():
                _keep_as_previous(path)
            os.replace(tmp, path)  # path is never absent: readers see the old file or the new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for name in (path.name, PREVIOUS):  # temp files left by a process killed mid-save
            for stale in path.parent.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)

    def load_checkpoint(
        self, path: str | Path, map_location: Callable | None = None, weights_only: bool | None = True
    ) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


def _keep_as_previous(last: Path) -> None:
    """Make ``previous.ckpt`` a second name for ``last`` (a copy where hard links fail), replaced atomically, while
    ``last`` stays in place until the new checkpoint is renamed over it."""
    tmp = last.with_name(f".{PREVIOUS}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(last, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(last, tmp)
        os.replace(tmp, last.with_name(PREVIOUS))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class LastCheckpoint(pl.Callback):
    """Writes ``path`` at every epoch end, every ``every_n_steps`` optimizer steps and, checked every 20
    steps, when ``every_minutes`` have passed since the last write.

    Saves happen after the optimizer step and the momentum-encoder update of a batch, so a checkpoint is
    always a consistent state between two steps.
    """

    def __init__(self, path: str | Path, every_n_steps: int | None = None, every_minutes: float | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.every_n_steps, self.every_minutes = every_n_steps, every_minutes
        self.poll_every_n_steps = 20
        self._last_save = time.monotonic()
        self.saved_step: int | None = None  # the global step of the last write

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        due = self.every_n_steps is not None and step % self.every_n_steps == 0
        if self.every_minutes and not due and step % self.poll_every_n_steps == 0:
            # every rank must agree to save (it is a collective under DDP): rank 0's clock decides; polled
            # every few steps so that DDP runs do not pay a broadcast per step
            due = bool(trainer.strategy.broadcast(time.monotonic() - self._last_save >= 60.0 * self.every_minutes))
        if due:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the full training state, not weights only
        self._last_save = time.monotonic()
        self.saved_step = trainer.global_step


def _loads(path: Path) -> dict[str, Any] | str:
    """The checkpoint at ``path``, or why it does not load (one line)."""
    if not path.is_file():
        return "missing"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, I/O error
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        return "not a training checkpoint (no state_dict / global_step)"
    return ckpt


def resume_checkpoint(last: Path) -> tuple[Path, int]:
    """The checkpoint to resume from and its global step: ``last`` when it loads, else ``previous.ckpt`` beside it
    with a warning naming both; a :class:`UserError` naming both when neither loads."""
    got = _loads(last)
    if isinstance(got, dict):
        return last, int(got["global_step"])
    previous = last.with_name(PREVIOUS)
    prev = _loads(previous)
    if isinstance(prev, dict):
        log.warning(
            "%s does not load (%s); resuming from %s (step %d) instead", last, got, previous, int(prev["global_step"])
        )
        return previous, int(prev["global_step"])
    raise UserError(
        f"--resume: {last} does not load ({got}) and neither does {previous} ({prev}); start again with --overwrite"
    )
