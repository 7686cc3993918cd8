"""Top-1 / top-5 counting shared by every protocol."""

from __future__ import annotations

from torch import Tensor


def topk_correct(scores: Tensor, labels: Tensor) -> tuple[int, int]:
    """Number of rows of ``scores`` (N, C) whose label (N,) is the top-1 class, and among the top-5 (top-C if C < 5)."""
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    hit = top == labels.to(top.device)[:, None]
    return int(hit[:, 0].sum()), int(hit.any(dim=1).sum())
