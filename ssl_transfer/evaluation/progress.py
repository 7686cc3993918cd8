"""What ``evaluate`` tells the user while it runs: one line per finished cell (protocol, label budget, seed, top-1,
seconds) on stderr, and on a terminal the fine-tuning epoch of the cell in progress, rewritten in place. Nothing
under ``-q``. Light on purpose: no Lightning import."""

from __future__ import annotations

import sys
import time
from typing import Any


def _verbosity() -> int:
    mod = sys.modules.get("ssl_transfer.training.console")  # set by the CLI's -q/-v when it was imported
    return int(mod.VERBOSE["level"]) if mod is not None else 1


def budget_text(labels_per_class: int | None) -> str:
    return "all labels" if labels_per_class is None else f"{labels_per_class} labels/class"


class EvalProgress:
    """Counts cells (protocol x label budget x seed) and reports each as it finishes."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total, self.done = total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = _verbosity() == 0
        self.live = not self.quiet and bool(getattr(self.stream, "isatty", lambda: False)())
        self._t0 = time.perf_counter()

    def start(self) -> None:
        """Start the clock of the next cell."""
        self._t0 = time.perf_counter()

    def epoch(self, protocol: str, labels_per_class: int | None, seed: int, epoch: int, epochs: int) -> None:
        """On a terminal: the running cell's epoch, rewritten in place."""
        if self.live:
            cell = f"{protocol}, {budget_text(labels_per_class)}, seed {seed}"
            print(f"\reval {self.done + 1}/{self.total}: {cell}: epoch {epoch}/{epochs}", end="", file=self.stream)
            self.stream.flush()

    def cell_done(self, row: dict[str, Any]) -> None:
        """One line for a finished cell (a row of ``evaluate``'s result)."""
        self.done += 1
        if self.quiet:
            return
        cell = f"{row['protocol']}, {budget_text(row['labels_per_class'])}, seed {row['seed']}"
        seconds = time.perf_counter() - self._t0
        line = f"eval {self.done}/{self.total}: {cell}: top-1 {100 * row['top1']:.2f}% ({seconds:.1f} s)"
        print(("\r\033[K" if self.live else "") + line, file=self.stream, flush=True)
        self._t0 = time.perf_counter()
