"""PNG plots written into the run dir: image grids from a method's ``visualize`` and the loss curve."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torchvision.utils import save_image

from ssl_transfer.training.metrics_log import read_metrics


def save_grid(images: Tensor, mean: Sequence[float], std: Sequence[float], path: str | Path, nrow: int) -> Path:
    """Normalised images (N, C, H, W) -> a PNG grid of ``nrow`` per row, pixel values undone to [0, 1]."""
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x = (images.detach().float().cpu() * s + m).clamp(0, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x, str(path), nrow=nrow, padding=1, pad_value=1.0)
    return path


def plot_loss_curve(metrics_path: str | Path, out_path: str | Path, key: str = "train/loss_step") -> Path | None:
    """Plot ``key`` against step from metrics.jsonl (with per-epoch means if logged); None if nothing logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(metrics_path)
    pts = [(r["step"], r[key]) for r in recs if key in r]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*pts), lw=1, alpha=0.6, label="per step")
    epoch_key = key.replace("_step", "_epoch")
    ep = [(r["step"], r[epoch_key]) for r in recs if epoch_key in r]
    if ep:
        ax.plot(*zip(*ep), "o-", label="epoch mean")
    ax.set_xlabel("step")
    ax.set_ylabel(key.split("/")[-1].replace("_step", ""))
    ax.set_yscale("log" if min(v for _, v in pts) > 0 else "linear")  # BYOL/SimSiam losses are negative
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return Path(out_path)
