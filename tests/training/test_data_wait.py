"""metrics.jsonl reports each epoch's share of time spent waiting for the loader (train/data_wait_share)."""

from __future__ import annotations

import time

import ssl_transfer.train as train_mod
from ssl_transfer.train import pretrain
from ssl_transfer.training.metrics_log import read_metrics

RECIPE = {
    "name": "w",
    "data": {"source": "digits", "limit_train": 256, "batch_size": 64},
    "backbone": {"name": "cnn_tiny"},
    "method": {"name": "simclr"},
    "augment": {"preset": "digits"},
    "trainer": {"max_epochs": 2},
    "monitor": {"enabled": False},
}


SLEEP_S, BATCHES = 0.25, 4  # 256 images / batch 64


def _waits(run_dir) -> list[float]:
    """Seconds per epoch spent waiting for the loader: the reported share of the reported epoch time."""
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "train/data_wait_share" in r]
    return [r["train/data_wait_share"] * r["train/epoch_time_s"] for r in rows]


class SlowLoader:
    """The real loader, 0.25 s slower per batch: a loader-bound run."""

    def __init__(self, loader) -> None:
        self.loader = loader
        self.batch_sampler = loader.batch_sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            time.sleep(SLEEP_S)
            yield batch


def test_in_memory_arrays_wait_almost_nothing_and_a_slow_loader_shows(quiet, monkeypatch):
    # in seconds, not as a share of the epoch: a loaded machine slows the steps, not the injected sleep
    fast = _waits(pretrain(RECIPE, [*quiet, "name=fast"]).run_dir)
    assert len(fast) == 2 and all(0 <= w < 0.2 * SLEEP_S * BATCHES for w in fast), fast

    make = train_mod.make_train_loader
    monkeypatch.setattr(train_mod, "make_train_loader", lambda *a, **k: SlowLoader(make(*a, **k)))
    slow = _waits(pretrain(RECIPE, [*quiet, "name=slow"]).run_dir)
    assert len(slow) == 2 and all(w >= 0.9 * SLEEP_S * BATCHES for w in slow), slow
