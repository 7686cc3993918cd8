"""Weighted kNN classification on cosine similarity with FAISS (Wu et al. 2018; DINO's evaluation).

Each of the k nearest training features votes for its label with weight exp(sim / T). The index is exact
(inner product on unit vectors) up to ``EXACT_MAX`` training points and approximate beyond (IVF, or HNSW on
request); which one was used is returned with the results. FAISS's GPU indexes are used when faiss was built
with them and a CUDA device is visible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from ssl_transfer.evaluation.accuracy import topk_correct

EXACT_MAX = 200_000
IndexKind = Literal["auto", "exact", "ivf", "hnsw"]


@dataclass
class IndexInfo:
    """What searched the neighbours: recorded with every kNN result."""

    kind: str
    n: int
    dim: int
    params: dict
    gpu: bool


def _unit(x: Tensor) -> np.ndarray:
    x = torch.nn.functional.normalize(x.float(), dim=1)
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and torch.cuda.is_available() and faiss.get_num_gpus() > 0


def build_index(train_unit: np.ndarray, kind: IndexKind = "auto", seed: int = 0) -> tuple[faiss.Index, IndexInfo]:
    """An inner-product index over unit rows (N, D). ``auto``: exact up to EXACT_MAX points, else IVF.

    IVF uses nlist = 4 sqrt(N) cells trained on up to 256 points per cell and searches nprobe = 32 cells;
    HNSW uses M = 32 and efSearch = 128.
    """
    n, d = train_unit.shape
    if kind == "auto":
        kind = "exact" if n <= EXACT_MAX else "ivf"
    params: dict = {}
    if kind == "exact":
        index: faiss.Index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = max(1, int(4 * math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = train_unit[rng.choice(n, size=min(n, 256 * nlist), replace=False)]
        index.train(sample)
        index.nprobe = min(32, nlist)
        params = {"nlist": nlist, "nprobe": index.nprobe}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        params = {"M": 32, "efSearch": 128}
    else:
        raise ValueError(f"unknown index kind {kind!r}; known: auto, exact, ivf, hnsw")
    gpu = kind != "hnsw" and _gpu_available()
    if gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(train_unit)
    return index, IndexInfo(kind, n, d, params, gpu)


def knn_scores(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 4096,
    index: IndexKind = "auto",
) -> tuple[Tensor, IndexInfo]:
    """Class scores (M, num_classes) for test features (M, D) from train features (N, D) and labels (N,), and
    the description of the index used.

    Cosine similarity via inner product of L2-normalised features; weights are exp(sim / temperature).
    ``k`` is capped at N.
    """
    idx, info = build_index(_unit(train_features), index)
    k = min(k, len(train_features))
    labels = train_labels.long()
    scores = []
    q = _unit(test_features)
    for i in range(0, len(q), batch_size):
        sims, nn_idx = idx.search(q[i : i + batch_size], k)
        found = nn_idx >= 0  # approximate indexes may return fewer than k
        w = torch.from_numpy(sims / temperature).exp() * torch.from_numpy(found)
        votes = torch.zeros(len(nn_idx), num_classes, dtype=torch.float32)
        votes.scatter_add_(1, labels[torch.from_numpy(np.where(found, nn_idx, 0))], w.float())
        scores.append(votes)
    return torch.cat(scores), info


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    index: IndexKind = "auto",
) -> dict:
    """Top-1 and top-5 accuracy (in [0, 1]) of weighted kNN; unlabeled (-1) training rows are ignored."""
    keep = train_labels >= 0
    train_features, train_labels = train_features[keep], train_labels[keep]
    if len(train_labels) == 0:
        raise ValueError("kNN needs labeled training images")
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores, info = knn_scores(train_features, train_labels, test_features, num_classes, k, temperature, index=index)
    top1, top5 = topk_correct(scores, test_labels)
    return {
        "top1": top1 / len(test_labels),
        "top5": top5 / len(test_labels),
        "k": k,
        "temperature": temperature,
        "n_train": len(train_labels),
        "n_test": len(test_labels),
        "index": asdict(info),
    }
