"""Weighted kNN classification on cosine similarity with FAISS (Wu et al. 2018; DINO's evaluation).

Each of the k nearest training features votes for its label with weight exp(sim / T).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from torch import Tensor


def _unit(x: Tensor) -> np.ndarray:
    x = torch.nn.functional.normalize(x.float(), dim=1)
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 4096,
) -> Tensor:
    """Class scores (M, num_classes) for test features (M, D) from train features (N, D) and labels (N,).

    Cosine similarity via inner product of L2-normalised features on an exact FAISS index; weights are
    exp(sim / temperature). ``k`` is capped at N.
    """
    index = faiss.IndexFlatIP(train_features.shape[1])
    index.add(_unit(train_features))
    k = min(k, len(train_features))
    labels = train_labels.long()
    scores = []
    q = _unit(test_features)
    for i in range(0, len(q), batch_size):
        sims, idx = index.search(q[i : i + batch_size], k)
        w = torch.from_numpy(sims / temperature).exp()
        votes = torch.zeros(len(idx), num_classes, dtype=torch.float32)
        votes.scatter_add_(1, labels[torch.from_numpy(idx)], w.float())
        scores.append(votes)
    return torch.cat(scores)


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (in [0, 1]) of weighted kNN; unlabeled (-1) training rows are ignored."""
    keep = train_labels >= 0
    train_features, train_labels = train_features[keep], train_labels[keep]
    if len(train_labels) == 0:
        raise ValueError("kNN needs labeled training images")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    top = scores.topk(min(5, num_classes), dim=1).indices
    hit = top == test_labels[:, None]
    return {
        "top1": float(hit[:, 0].float().mean()),
        "top5": float(hit.any(dim=1).float().mean()),
        "k": k,
        "temperature": temperature,
        "n_train": len(train_labels),
        "n_test": len(test_labels),
    }
