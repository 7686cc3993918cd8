"""Label subsets for label-efficiency sweeps and stratified validation splits."""

from __future__ import annotations

import numpy as np
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
    """Split ``indices`` into sorted (train, val) with ~``val_fraction`` of each class in val (scikit-learn's
    stratified ``train_test_split``; at least one image per class in val overall), or None when some class has
    fewer than 2 images."""
    from sklearn.model_selection import train_test_split

    y = labels[indices].numpy()
    _, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        return None
    k = len(counts)
    n_val = min(len(y) - k, max(k, round(val_fraction * len(y))))
    tr, va = train_test_split(indices.numpy(), test_size=n_val, stratify=y, random_state=seed)
    return torch.as_tensor(np.sort(tr)), torch.as_tensor(np.sort(va))
