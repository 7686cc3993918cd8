"""Checkpoint files: a process killed in the middle of a save leaves the previous checkpoint loadable; loads
never unpickle arbitrary objects."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ssl_transfer.training.checkpoint import AtomicCheckpointIO

# A child process writes checkpoint A, then dies from SIGKILL at one point of writing checkpoint B.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    import ssl_transfer.training.checkpoint as ck

    path, when = sys.argv[1], sys.argv[2]
    io = ck.AtomicCheckpointIO()
    io.save_checkpoint({"name": "A", "w": torch.arange(1000.0)}, path)

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if when == "write":  # half of B's bytes are on disk
        real_save = torch.save
        def half_save(obj, f, *a, **k):
            import io as _io
            buf = _io.BytesIO(); real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush()
            die()
        ck.torch.save = half_save
    elif when == "fsync":  # all of B written, not yet synced
        ck.os.fsync = die
    elif when == "rename":  # B synced, the rename never happens
        ck.os.replace = die
    elif when == "rename-over-last":  # B synced, A kept as previous.ckpt, B's rename over last.ckpt never happens
        real_replace = os.replace
        def replace_then_die(src, dst):
            if os.path.basename(dst) == "last.ckpt":
                die()
            real_replace(src, dst)
        ck.os.replace = replace_then_die
    io.save_checkpoint({"name": "B", "w": torch.arange(1000.0) * 2}, path)
    print("not killed")
    """
)


@pytest.mark.parametrize("when", ["write", "fsync", "rename", "rename-over-last"])
def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path: Path, when: str):
    path = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), when], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr

    io = AtomicCheckpointIO()
    ckpt = io.load_checkpoint(path)
    assert ckpt["name"] == "A" and torch.equal(ckpt["w"], torch.arange(1000.0))
    stale = list(path.parent.glob(".last.ckpt.*.tmp"))
    assert len(stale) == 1  # the interrupted save's temp file, never the checkpoint itself

    io.save_checkpoint({"name": "C"}, path)  # the next save succeeds and clears the leftover
    assert io.load_checkpoint(path)["name"] == "C"
    assert not list(path.parent.glob(".last.ckpt.*.tmp"))


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_checkpoint_loads_refuse_arbitrary_objects(tmp_path: Path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path)


def test_missing_checkpoint_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "nope.ckpt")


class _Trainer:
    """The two things LastCheckpoint asks of a Trainer: the step, a broadcast, and save_checkpoint."""

    def __init__(self) -> None:
        self.global_step, self.saved = 0, []
        self.strategy = self

    def broadcast(self, obj):
        return obj

    def save_checkpoint(self, path, weights_only=None):
        assert weights_only is False  # the full training state
        self.saved.append(self.global_step)


@pytest.mark.parametrize(
    "every_n_steps,every_minutes,expected",
    [(7, None, [7, 14, 21, 28, 35, 42]), (None, 1e-9, [20, 40]), (None, 60.0, []), (15, 1e-9, [15, 20, 30, 40, 45])],
)
def test_when_last_checkpoint_is_written(tmp_path: Path, every_n_steps, every_minutes, expected):
    from ssl_transfer.training.checkpoint import LastCheckpoint

    cb, trainer = LastCheckpoint(tmp_path / "last.ckpt", every_n_steps, every_minutes), _Trainer()
    cb.on_train_start(trainer, None)
    for step in range(1, 46):
        trainer.global_step = step
        cb.on_train_batch_end(trainer, None, None, None, step - 1)
    assert trainer.saved == expected
    cb.on_train_epoch_end(trainer, None)
    assert trainer.saved[-1] == 45  # always at the epoch end


def test_a_truncated_last_checkpoint_resumes_from_the_previous_one(quiet, caplog):
    from ssl_transfer.errors import UserError
    from ssl_transfer.train import pretrain

    recipe = {
        "name": "p",
        "data": {"source": "digits", "limit_train": 128, "batch_size": 64},
        "backbone": {"name": "cnn_tiny"},
        "trainer": {"max_epochs": 2},
        "monitor": {"enabled": False},
    }
    res = pretrain(recipe, quiet)
    ckpts = res.run_dir / "checkpoints"
    last, previous = ckpts / "last.ckpt", ckpts / "previous.ckpt"
    assert (
        torch.load(last, weights_only=True)["global_step"] == 4
        and torch.load(previous, weights_only=True)["global_step"] == 2
    )
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a partial copy / full disk
    with caplog.at_level("WARNING", logger="ssl_transfer"):
        resumed = pretrain(res.run_dir, ["trainer.max_epochs=3"], resume=True)
    assert any(
        "last.ckpt does not load" in r.getMessage() and "previous.ckpt (step 2)" in r.getMessage()
        for r in caplog.records
    )
    assert (
        torch.load(resumed.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    )  # 2 + 2 epochs of 2

    for f in (last, previous):
        f.write_bytes(b"garbage")
    with pytest.raises(UserError, match="does not load .* and neither does"):
        pretrain(res.run_dir, [], resume=True)
