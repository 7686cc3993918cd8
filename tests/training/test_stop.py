"""SIGTERM / SIGINT: the run ends its step, writes a resumable checkpoint, says how to resume, exits 128 + signal,
and ``--resume`` then ends bit-identical to an uninterrupted run (CPU, deterministic settings)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssl_transfer.training.metrics_log import read_metrics
from tests.training.test_resume import _final_state, _poll_checkpoint_step, assert_bit_identical

ARGS = [
    f"{k}={v}"
    for k, v in {
        "data.source": "digits",
        "data.batch_size": 32,
        "backbone.name": "cnn_tiny",
        "augment.preset": "digits",
        "method.name": "moco",
        "trainer.max_epochs": 3,
        "trainer.deterministic": "true",
        "logging.plots": "false",
        "trainer.checkpoint_every_minutes": "null",
    }.items()
]  # 1437 // 32 = 44 steps an epoch, 132 in all; last.ckpt only at epoch ends (and on the signal)
STEPS_PER_EPOCH, TOTAL = 44, 132


def _logged_step(run_dir: Path) -> int:
    """The last step metrics.jsonl has a record of (-1 before any, or while a line is being written)."""
    try:
        records = read_metrics(run_dir / "metrics.jsonl")
    except ValueError:  # a half-written last line: the next poll reads it whole
        return -1
    return max((r["step"] for r in records if r.get("step") is not None), default=-1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_with_a_checkpoint_and_exit_status_then_resumes_bit_exact(tmp_path: Path, quiet, sig: int):
    cmd = [sys.executable, "-m", "ssl_transfer", "pretrain", "quickstart", *ARGS, *quiet]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ckpt = tmp_path / "runs" / "stopped" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [*cmd, "name=stopped"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    # into the second epoch (a step of it logged), where the only checkpoint so far is the first epoch's end; waiting
    # for the log rather than a fixed time keeps this right on a loaded machine (a 0.5 s sleep once landed on step 44)
    while time.monotonic() < deadline and proc.poll() is None and _logged_step(ckpt.parents[1]) <= STEPS_PER_EPOCH:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 128 + sig, err[-2000:]
    line = [ln for ln in err.splitlines() if ln.startswith("ssl-transfer: stopped by")]
    assert len(line) == 1 and signal.Signals(sig).name in line[0] and "--resume" in line[0], err[-2000:]
    stopped_at = int(re.search(r"at step (\d+)", line[0]).group(1))
    assert STEPS_PER_EPOCH < stopped_at < TOTAL and stopped_at % STEPS_PER_EPOCH != 0
    assert _poll_checkpoint_step(ckpt) == stopped_at  # written at the stop, not only at the epoch end
    assert not (ckpt.parents[1] / "encoder.safetensors").exists()  # no encoder from a half-trained run

    resumed = subprocess.run(
        [*cmd[:4], str(ckpt.parents[1]), "--resume"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = subprocess.run([*cmd, "name=full"], env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    a, b = _final_state(tmp_path / "runs" / "full"), _final_state(tmp_path / "runs" / "stopped")
    assert a["step"] == b["step"] == TOTAL
    assert_bit_identical(a, b)
