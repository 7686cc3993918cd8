"""Exact resume: a run interrupted after any checkpoint and resumed ends with the same weights, optimizer
state, momentum encoders and queues as an uninterrupted run, bit for bit (CPU, deterministic settings)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_transfer.train import pretrain
from ssl_transfer.training.checkpoint import LastCheckpoint

# 320 digits / batch 64 = 5 steps an epoch, 3 epochs = 15 steps; a checkpoint after every step
RECIPE = {
    "name": "r",
    "data": {"source": "digits", "limit_train": 320, "batch_size": 64},
    "backbone": {"name": "cnn_tiny"},
    "augment": {"preset": "digits"},
    "optim": {"lr": 2e-3, "warmup_epochs": 1},
    "trainer": {"max_epochs": 3, "deterministic": True, "checkpoint_every_n_steps": 1},
}


class Interrupted(Exception):
    pass


def _run(tmp: Path, method: str, name: str, quiet: list[str]) -> list[str]:
    return [*quiet, f"output_dir={tmp}", f"name={name}", f"method.name={method}"]


def _final_state(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return {
        "state_dict": ckpt["state_dict"],
        "optimizer": ckpt["optimizer_states"],
        "scheduler": ckpt["lr_schedulers"],
        "step": ckpt["global_step"],
    }


def assert_bit_identical(a: object, b: object, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_bit_identical(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize(
    "method,stop_at",
    [
        ("simclr", 7),
        ("simclr", 5),
        ("moco", 8),
        ("nnclr", 8),
        ("byol", 6),
        ("dino", 6),
        ("swav", 7),
        ("vae", 7),
        ("dae", 11),
    ],
)
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path: Path, quiet, monkeypatch, method: str, stop_at: int):
    """stop_at=5 is the last batch of epoch 0: the checkpoint is written before the epoch-end hooks run."""
    full = pretrain(RECIPE, _run(tmp_path, method, "full", quiet))

    save = LastCheckpoint.save

    def save_then_stop(self, trainer):
        save(self, trainer)
        if trainer.global_step == stop_at:
            raise Interrupted

    monkeypatch.setattr(LastCheckpoint, "save", save_then_stop)
    with pytest.raises(Interrupted):
        pretrain(RECIPE, _run(tmp_path, method, "cut", quiet))
    monkeypatch.undo()
    cut_dir = tmp_path / "cut"
    assert torch.load(cut_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == stop_at
    resumed = pretrain(cut_dir, [], resume=True)

    a, b = _final_state(full.run_dir), _final_state(resumed.run_dir)
    assert a["step"] == b["step"] == 15
    assert_bit_identical(a, b)
    assert (full.run_dir / "encoder.safetensors").read_bytes() == (resumed.run_dir / "encoder.safetensors").read_bytes()
    if method == "moco":
        assert any("memory_bank.bank" in k for k in a["state_dict"])  # the queue is part of what matched


def _poll_checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["global_step"])
    except Exception:  # not written yet (atomic rename: never half-written)
        return -1


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,extra",
    [
        ("moco", {}),
        (
            "dino",
            {
                "data.limit_train": 512,  # 16 steps an epoch
                "augment.local_views": 2,
                "augment.local_size": 6,
                "method.weight_decay_end": 0.1,
                "method.proj_hidden_dim": 64,
                "method.output_dim": 256,
            },
        ),
    ],
    ids=["moco", "dino-multicrop"],
)
def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(tmp_path: Path, quiet, method: str, extra: dict):
    """A real `ssl-transfer pretrain` process is killed with SIGKILL mid-epoch and resumed with --resume (DINO:
    its centre, teacher, local views and weight-decay schedule continue exactly)."""
    args = [
        f"{k}={v}"
        for k, v in {
            "data.source": "digits",
            "data.batch_size": 32,
            "backbone.name": "cnn_tiny",
            "augment.preset": "digits",
            "method.name": method,
            **extra,
            "trainer.max_epochs": 4,
            "trainer.deterministic": "true",
            "trainer.checkpoint_every_n_steps": 3,
            "logging.plots": "false",
        }.items()
    ]
    per_epoch = int(extra.get("data.limit_train", 1437)) // 32  # moco: 44 steps an epoch, 176 in all
    total = 4 * per_epoch
    common = [*args, *quiet]
    cmd = [sys.executable, "-m", "ssl_transfer", "pretrain", "quickstart"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    ckpt = tmp_path / "runs" / "killed" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([*cmd, *common, "name=killed"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = -1
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        step = _poll_checkpoint_step(ckpt)
        if step >= per_epoch + 6 and step % per_epoch != 0:  # into the second epoch, not at an epoch boundary
            proc.send_signal(signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    )
    assert 0 < _poll_checkpoint_step(ckpt) < total, killed_at

    resumed = subprocess.run(
        [*cmd[:-1], str(ckpt.parents[1]), "--resume"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = subprocess.run([*cmd, *common, "name=full"], env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]

    a, b = _final_state(tmp_path / "runs" / "full"), _final_state(tmp_path / "runs" / "killed")
    assert a["step"] == b["step"] == total
    assert_bit_identical(a, b)
