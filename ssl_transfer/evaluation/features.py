"""Embed a dataset once: no grad, eval mode, normalised exactly as in training."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssl_transfer.data import make_loader


def normalize(x_uint8: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (B, C, H, W) -> float (B, C, H, W) with per-channel (x/255 - mean) / std."""
    m = torch.as_tensor(mean, device=x_uint8.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x_uint8.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (x_uint8.float() / 255.0 - m) / s


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """Features (N, D) float32 on CPU and labels (N,) int64 of every image in ``dataset``.

    The encoder is put in eval mode for the pass (BatchNorm uses its running statistics, which are not
    updated) and restored to its previous mode afterwards. On CUDA the forward runs under bf16 autocast.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    try:
        for images, y in make_loader(dataset, batch_size, shuffle=False, drop_last=False, num_workers=num_workers):
            x = normalize(images.to(device, non_blocking=True), mean, std)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                f = encoder(x)
            feats.append(f.float().cpu())
            labels.append(y)
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)
