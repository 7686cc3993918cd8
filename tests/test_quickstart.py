"""The README's main command, exactly as a user runs it on a fresh machine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ssl_transfer.train import first_and_last_loss


@pytest.mark.slow
def test_readme_quickstart_command(tmp_path: Path):
    exe = shutil.which("ssl-transfer")
    assert exe, "the console script is installed by `pip install -e .[dev]`"
    r = subprocess.run([exe, "run", "quickstart"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp_path / "runs" / "quickstart"
    for f in [
        "recipe.yaml",
        "checkpoints/last.ckpt",
        "metrics.jsonl",
        "encoder.safetensors",
        "encoder.json",
        "eval.json",
    ]:
        assert (run_dir / f).is_file(), f
    first, last = first_and_last_loss(run_dir)
    assert last <= 0.5 * first, (first, last)  # reconstruction loss at least halves over the run
    top1 = float(re.search(r"top-1 ([\d.]+)%", r.stdout).group(1))
    assert top1 > 80.0  # kNN on the 10-class digits test split; chance is 10%
    assert len(r.stdout.splitlines()) + len(r.stderr.splitlines()) < 40, "quiet output: one line per epoch, a summary"
    assert "Warning" not in r.stderr and "WARNING" not in r.stderr, r.stderr[-2000:]
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb logs offline by default"
