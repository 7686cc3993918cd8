from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def quiet(tmp_path: Path) -> list[str]:
    """Overrides that keep a test run small, local and silent."""
    return [
        f"output_dir={tmp_path / 'runs'}",
        "logging.wandb=disabled",
        "trainer.progress_bar=false",
        "trainer.log_every_n_steps=1",
    ]


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A 4-class 12x12 grayscale npz whose classes differ by which quadrant is bright."""
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 60, (n, 12, 12)).astype(np.uint8)
        for i, c in enumerate(y):
            r, q = divmod(int(c), 2)
            x[i, r * 6 : r * 6 + 6, q * 6 : q * 6 + 6] += 180
        return x, y.astype(np.int64)

    xtr, ytr = make(200)
    xte, yte = make(80)
    p = tmp_path / "tiny.npz"
    np.savez(p, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return p


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory) -> Path:
    """A small trained encoder (SimCLR, cnn_tiny, 8 px grey digits) for the distill method to distil from."""
    from ssl_transfer.train import pretrain

    out = tmp_path_factory.mktemp("teacher")
    return pretrain(
        {
            "name": "teacher",
            "output_dir": str(out),
            "data": {"source": "digits", "limit_train": 128, "batch_size": 64},
            "backbone": {"name": "cnn_tiny"},
            "method": {"name": "simclr"},
            "trainer": {"max_epochs": 1, "progress_bar": False},
            "logging": {"wandb": "disabled", "plots": False},
            "monitor": {"enabled": False},
        }
    ).run_dir


@pytest.fixture
def side_by_side():
    """``side_by_side(target, [args, ...])`` runs ``target(*args)`` in one forked process per ``args``, all at
    once (as the refresh runs two benchmarks), and asserts that each exits cleanly."""
    import multiprocessing as mp

    def run(target, arg_lists: list[tuple]) -> None:
        procs = [mp.get_context("fork").Process(target=target, args=args) for args in arg_lists]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0

    return run
