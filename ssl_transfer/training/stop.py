"""A stop that a scheduler sees: SIGTERM (SLURM, Kubernetes, ``timeout``) or SIGINT (Ctrl+C) ends the current
optimizer step, writes a resumable ``last.ckpt`` and makes :func:`~ssl_transfer.train.pretrain` raise
:class:`~ssl_transfer.errors.Stopped`, which the CLI turns into one line and exit status 128 + signal
(143 for SIGTERM, 130 for SIGINT).

Built on Lightning's own SIGTERM handling (its handler sets ``trainer.received_sigterm``; the loops raise
``SIGTERMException`` after the step, and under DDP rank 0's flag is broadcast): this callback records which signal
came, routes a first SIGINT through the same path (a second one interrupts at once) and writes the checkpoint
at the point where mid-epoch checkpoints are always written, so ``--resume`` continues bit-exact. Under SLURM,
Lightning's auto-requeue on its requeue signal (``#SBATCH --signal=SIGUSR1@90``) is left as Lightning sets it.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import pytorch_lightning as pl

from ssl_transfer.training.checkpoint import LastCheckpoint


class StopOnSignal(pl.Callback):
    """Records SIGTERM/SIGINT during ``fit`` and has ``checkpoint`` write ``last.ckpt`` after the step in flight."""

    def __init__(self, checkpoint: LastCheckpoint) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.signum: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signum = None
        if not _main_thread():
            return
        lightning_term = signal.getsignal(signal.SIGTERM)  # Lightning's handler, installed for this fit

        def on_term(signum: int, frame: FrameType | None) -> None:
            self.signum = self.signum or signum
            if callable(lightning_term):
                lightning_term(signum, frame)
            trainer._signal_connector.received_sigterm = True  # also where Lightning's handler was replaced

        def on_int(signum: int, frame: FrameType | None) -> None:
            self.signum = self.signum or signum
            trainer._signal_connector.received_sigterm = True
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C interrupts at once

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_int)  # Lightning restores both handlers at teardown

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.signum is not None and self.checkpoint.saved_step != trainer.global_step:
            self.checkpoint.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # the signal came between this step's batch-end hooks and Lightning's check: save the state it stops in
        if self.signum is not None and self.checkpoint.saved_step != trainer.global_step and trainer.global_step > 0:
            self.checkpoint.save(trainer)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def signal_name(signum: int) -> str:
    """'SIGTERM' for 15."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
