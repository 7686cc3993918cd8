"""PNG plots written into the run dir: image grids from a method's ``visualize`` and the loss curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image

from ssl_transfer.data.datasets import ArrayDataset, FileDataset
from ssl_transfer.training.metrics_log import read_metrics


def first_images(ds: ArrayDataset | FileDataset, n: int) -> Tensor:
    """The first ``n`` images of ``ds`` as uint8 (n, C, H, W): the fixed images the run's plots show."""
    n = min(n, len(ds))
    return ds.images[:n] if isinstance(ds, ArrayDataset) else torch.stack([ds[i][0] for i in range(n)])


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


def plot_monitor(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """The online monitor's kNN top-1 and effective rank against epoch, from metrics.jsonl; None if not logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(metrics_path)
    panels = [
        ("monitor/knn_top1", "monitored kNN top-1"),
        ("monitor/effective_rank", "effective rank (RankMe)"),
        ("monitor/std_ratio", "std of normalised embeddings x sqrt(D)"),
    ]
    series = [(title, [(r["epoch"] + 1, r[key]) for r in recs if key in r]) for key, title in panels]
    series = [(t, pts) for t, pts in series if pts]
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.2))
    for ax, (title, pts) in zip(list(axes) if len(series) > 1 else [axes], series):
        ax.plot(*zip(*pts), "o-")
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return Path(out_path)
