"""The online monitor: collapse signals, kNN during training, the collapse warning, best.ckpt."""

from __future__ import annotations

import logging

import pytest
import torch

from ssl_transfer.train import pretrain
from ssl_transfer.training.metrics_log import read_metrics
from ssl_transfer.training.monitor import alignment, collapse_signals, effective_rank


def test_effective_rank_counts_used_dimensions():
    torch.manual_seed(0)
    assert effective_rank(torch.randn(512, 1) @ torch.randn(1, 32)) == pytest.approx(1.0, abs=0.01)
    spread = effective_rank(torch.randn(2048, 16))
    assert 14.5 < spread <= 16.0
    assert 3.5 < effective_rank(torch.randn(2048, 4) @ torch.randn(4, 16)) <= 4.01


def test_collapse_signals_of_collapsed_and_spread_embeddings():
    torch.manual_seed(0)
    collapsed = collapse_signals(torch.ones(256, 32) + 1e-6 * torch.randn(256, 32))
    spread = collapse_signals(torch.randn(256, 32))
    assert collapsed["std"] < 1e-5 and collapsed["std_ratio"] < 1e-4
    assert spread["std_ratio"] == pytest.approx(1.0, abs=0.1)  # uniform on the sphere: std about 1/sqrt(D)
    assert collapsed["uniformity"] == pytest.approx(0.0, abs=1e-6) and spread["uniformity"] < -3.0
    z = torch.randn(64, 8)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-12) and alignment(z, -z) == pytest.approx(4.0)


def test_default_run_logs_monitored_knn_and_effective_rank(quiet):
    recipe = {
        "name": "mon",
        "method": {"name": "simclr"},
        "data": {"source": "digits", "batch_size": 128},
        "augment": {"preset": "digits"},
        "backbone": {"name": "cnn_tiny"},
        "trainer": {"max_epochs": 3},
    }
    res = pretrain(recipe, [*quiet, "monitor.save_best=true"])
    recs = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if "monitor/knn_top1" in r]
    assert [r["epoch"] for r in recs] == [-1, 0, 1, 2]  # before training (the random-init baseline), then each epoch
    for r in recs:
        for key in (
            "monitor/effective_rank",
            "monitor/std",
            "monitor/std_ratio",
            "monitor/alignment",
            "monitor/uniformity",
            "monitor/time_s",
        ):
            assert key in r, key
    assert recs[-1]["monitor/knn_top1"] > 0.5  # 10 classes: chance is 0.1
    assert recs[-1]["monitor/knn_top1"] > recs[0]["monitor/knn_top1"] + 0.05  # learned beyond the random init
    assert recs[-1]["monitor/effective_rank"] > 5
    assert (res.run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (res.run_dir / "plots" / "monitor.png").is_file()


def test_monitor_off_logs_nothing(quiet):
    res = pretrain(
        {
            "name": "off",
            "data": {"source": "digits", "limit_train": 256, "batch_size": 64},
            "trainer": {"max_epochs": 1},
            "monitor": {"enabled": False},
        },
        quiet,
    )
    assert not any(k.startswith("monitor/") for r in read_metrics(res.run_dir / "metrics.jsonl") for k in r)


@pytest.mark.slow
@pytest.mark.parametrize("stop_gradient", [True, False])
def test_simsiam_without_stop_gradient_collapses_and_the_monitor_says_when(quiet, caplog, stop_gradient):
    # float32 and a constant lr, so the epoch count does not change the early steps; the steps still differ in the
    # last bits between CPUs and thread counts, and the run without stop-gradient oscillates before it settles: on a
    # Xeon it first collapsed within 6 epochs, on an AMD EPYC at epoch 8 (2 threads) or 6 (1 thread); 10 epochs
    # leave a margin. With stop-gradient the projection stays spread (std ratio > 0.75, rank > 19 on the EPYC).
    recipe = {
        "name": "collapse",
        "seed": 1,
        "data": {"source": "digits", "batch_size": 64},
        "augment": {"preset": "digits"},
        "method": {
            "name": "simsiam",
            "stop_gradient": stop_gradient,
            "proj_hidden_dim": 64,
            "proj_out_dim": 64,
            "pred_hidden_dim": 16,
        },
        "backbone": {"name": "cnn_tiny"},
        "trainer": {"max_epochs": 10, "precision": "32-true"},
        "optim": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0, "schedule": "constant"},
    }
    with caplog.at_level(logging.WARNING, logger="ssl_transfer"):
        res = pretrain(recipe, quiet)
    recs = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if "monitor/proj_std_ratio" in r and r["epoch"] >= 0]
    assert len(recs) == 10
    warned = [m for m in caplog.messages if "has collapsed" in m]
    collapsed = [r["monitor/proj_std_ratio"] < 0.05 or r["monitor/proj_effective_rank"] < 1.5 for r in recs]
    if stop_gradient:  # the same run with its stop-gradient keeps a spread projection: no warning
        assert not warned and not any(collapsed), [
            (r["monitor/proj_std_ratio"], r["monitor/proj_effective_rank"]) for r in recs
        ]
        return
    assert len(warned) == 1, caplog.messages  # once, naming the first collapsed epoch
    epoch = int(warned[0].split(":")[0].split()[-1])
    assert collapsed.index(True) == epoch - 1
