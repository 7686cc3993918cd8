"""Label subsets for label-efficiency sweeps and stratified validation splits."""

from __future__ import annotations

import torch
from torch import Tensor


def per_class_subset(labels: Tensor, n_per_class: int | None, seed: int) -> Tensor:
    """Indices of ``n_per_class`` randomly chosen images of each class (all labeled images for None).

    Unlabeled (-1) images are never chosen; a class with fewer images gives all it has. Sorted (N,) int64.
    """
    labels = labels.long()
    labeled = torch.nonzero(labels >= 0).flatten()
    if n_per_class is None:
        return labeled
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels[labeled].unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:n_per_class]])
    return torch.cat(picks).sort().values


def stratified_split(indices: Tensor, labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor] | None:
    """Split ``indices`` into (train, val) with ~``val_fraction`` of each class in val, at least one image of
    each class on both sides; None when some class has fewer than 2 images."""
    g = torch.Generator().manual_seed(seed)
    tr, va = [], []
    y = labels[indices]
    for c in y.unique().tolist():
        idx = indices[y == c]
        if len(idx) < 2:
            return None
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = min(len(idx) - 1, max(1, round(val_fraction * len(idx))))
        va.append(idx[:n_val])
        tr.append(idx[n_val:])
    return torch.cat(tr).sort().values, torch.cat(va).sort().values
