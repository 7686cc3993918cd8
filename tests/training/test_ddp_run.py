"""A real 2-process DDP pretraining run (Lightning, gloo on CPU) of SimCLR, launched by the CLI, against one
process holding the global batch: same losses step by step, same weights after training.

torch's SyncBatchNorm is CUDA-only, so per-rank BatchNorm statistics would differ from the global batch's:
the run uses a LayerNorm backbone (timm's convnext_atto) and a projection head without BatchNorm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_transfer.training.metrics_log import read_metrics

STEPS = 4
COMMON = {
    "data.source": "digits",
    "data.image_size": 32,
    "backbone.name": "convnext_atto",
    "method.name": "simclr",
    "method.proj_batch_norm": "false",
    "augment.preset": "none",
    "trainer.accelerator": "cpu",
    "trainer.max_steps": STEPS,
    "trainer.max_epochs": 1,
    "trainer.log_every_n_steps": 1,
    "trainer.progress_bar": "false",
    "logging.wandb": "disabled",
    "logging.plots": "false",
    "optim.lr": 1e-3,
    "trainer.precision": "32-true",  # float32 on every CPU: bf16 rounding depends on how the batch is split
}


def _pretrain(tmp: Path, name: str, **extra) -> Path:
    args = [f"{k}={v}" for k, v in {**COMMON, **extra, "output_dir": str(tmp), "name": name}.items()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_transfer", "pretrain", "quickstart", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / name


@pytest.mark.slow
def test_two_process_ddp_simclr_matches_one_process_global_batch(tmp_path: Path):
    ddp = _pretrain(tmp_path, "ddp", **{"trainer.strategy": "ddp", "trainer.devices": 2, "data.batch_size": 32})
    single = _pretrain(tmp_path, "single", **{"trainer.devices": 1, "data.batch_size": 64})

    def losses(run: Path) -> list[float]:
        return [r["train/loss_step"] for r in read_metrics(run / "metrics.jsonl") if "train/loss_step" in r]

    l_ddp, l_single = losses(ddp), losses(single)
    assert len(l_ddp) == len(l_single) == STEPS
    # rank losses use negatives gathered from both ranks; their mean is the loss of the global batch
    assert torch.allclose(torch.tensor(l_ddp), torch.tensor(l_single), rtol=1e-4, atol=1e-5), (l_ddp, l_single)
    assert l_ddp[-1] < l_ddp[0]

    w_ddp, w_single = load_file(ddp / "encoder.safetensors"), load_file(single / "encoder.safetensors")
    assert w_ddp.keys() == w_single.keys()
    for k in w_ddp:
        assert torch.allclose(w_ddp[k], w_single[k], atol=1e-4), k
    ckpt = torch.load(ddp / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS
    assert json.loads((ddp / "encoder.json").read_text())["recipe"]["trainer"]["strategy"] == "ddp"


def test_sync_batchnorm_on_cpu_ddp_is_one_clear_line(tmp_path: Path, quiet):
    from ssl_transfer.errors import UserError
    from ssl_transfer.train import pretrain

    with pytest.raises(UserError, match="SyncBatchNorm runs on GPUs only"):
        pretrain(
            "quickstart",
            [
                *quiet,
                "trainer.strategy=ddp",
                "trainer.devices=2",
                "trainer.accelerator=cpu",
                "trainer.sync_batchnorm=true",
            ],
        )
