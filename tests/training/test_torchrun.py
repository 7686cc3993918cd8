"""Multi-process launch by torchrun (as on a cluster node) on the sharded source: 2 CPU processes, gloo, against
one process holding the global batch: same losses step by step, same weights (see test_ddp_run for why the
backbone has no BatchNorm)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_transfer.training.metrics_log import read_metrics

from ..data.test_shards import image_folder, shard
from .test_ddp_run import COMMON, STEPS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pretrain(launcher: list[str], tmp: Path, name: str, shards: Path, **extra) -> Path:
    settings = {**COMMON, "data.source": "shards", "data.root": str(shards), "data.num_workers": 1, **extra}
    args = [f"{k}={v}" for k, v in {**settings, "output_dir": str(tmp), "name": name}.items()]
    proc = subprocess.run(
        [*launcher, "-m", "ssl_transfer", "pretrain", "quickstart", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / name


def _losses(run: Path) -> list[float]:
    return [r["train/loss_step"] for r in read_metrics(run / "metrics.jsonl") if "train/loss_step" in r]


@pytest.mark.slow
def test_torchrun_two_processes_on_shards_match_one_process(tmp_path: Path):
    shards = shard(image_folder(tmp_path / "images", n=160, classes=4, size=32), tmp_path / "shards")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    torchrun += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    ddp = _pretrain(
        torchrun,
        tmp_path,
        "torchrun",
        shards,
        **{"trainer.strategy": "ddp", "trainer.devices": 2, "data.batch_size": 16},
    )
    single = _pretrain([sys.executable], tmp_path, "single", shards, **{"trainer.devices": 1, "data.batch_size": 32})
    l_ddp, l_single = _losses(ddp), _losses(single)
    assert len(l_ddp) == len(l_single) == STEPS
    assert torch.allclose(torch.tensor(l_ddp), torch.tensor(l_single), rtol=1e-4, atol=1e-5), (l_ddp, l_single)
    w_ddp, w_single = load_file(ddp / "encoder.safetensors"), load_file(single / "encoder.safetensors")
    assert w_ddp.keys() == w_single.keys()
    for k in w_ddp:
        assert torch.allclose(w_ddp[k], w_single[k], atol=1e-4), k
