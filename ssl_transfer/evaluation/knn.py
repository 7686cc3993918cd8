"""Weighted kNN classification on cosine similarity with FAISS (Wu et al. 2018; DINO's evaluation).

Each of the k nearest training features votes for its label with weight exp(sim / T). The index is exact
(inner product on unit vectors) while training points x queries is small and approximate beyond (IVF, or HNSW on
request); which one was used is returned with the results. FAISS's GPU indexes are used when faiss was built
with them and a CUDA device is visible.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from ssl_transfer.evaluation.accuracy import topk_correct

EXACT_WORK = 2e8  # auto: exact search while (training points x queries) stays below this
IVF_TRAIN_PER_LIST = 64  # k-means for the IVF cells sees at most this many points per cell (FAISS wants >= 39)
IVF_NPROBE = 16
MEMORY_FRACTION = 0.25  # auto: vectors stored in float16, then PQ, when float32 would take more of the free RAM
IndexKind = Literal["auto", "exact", "ivf", "hnsw"]
Storage = Literal["auto", "flat", "fp16", "pq"]


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


def available_memory() -> int:
    """Bytes of RAM free now (Linux ``MemAvailable``; physical pages elsewhere)."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_storage(n: int, d: int) -> str:
    """float32 vectors while they take at most MEMORY_FRACTION of the free RAM, float16 while half of that fits,
    product quantisation (d/4 bytes per vector) beyond."""
    budget = MEMORY_FRACTION * available_memory()
    if 4 * n * d <= budget:
        return "flat"
    return "fp16" if 2 * n * d <= budget else "pq"


def _pq_subquantizers(d: int) -> int:
    """The largest divisor of ``d`` up to d/4 (4 dimensions per byte), at least 1."""
    return max(m for m in range(1, max(1, d // 4) + 1) if d % m == 0)


def build_index(
    train_unit: np.ndarray,
    kind: IndexKind = "auto",
    seed: int = 0,
    num_queries: int | None = None,
    storage: Storage = "auto",
) -> tuple[faiss.Index, IndexInfo]:
    """An inner-product index over unit rows (N, D).

    ``auto``: exact search while N x ``num_queries`` < EXACT_WORK (a small query set searches a large bank
    exactly in less time than training cells takes), else IVF. IVF: nlist = sqrt(N) cells (at least 16), k-means
    on at most IVF_TRAIN_PER_LIST points per cell, nprobe = IVF_NPROBE; vectors stored as float32, float16
    (``fp16``) or product-quantised (``pq``), by ``storage`` or (``auto``) the free memory. HNSW: M = 32,
    efSearch = 128.
    """
    n, d = train_unit.shape
    if kind == "auto":
        queries = n if num_queries is None else num_queries
        kind = "exact" if n * queries < EXACT_WORK or n < 4 * 16 * IVF_TRAIN_PER_LIST else "ivf"
    params: dict = {}
    if kind == "exact":
        index: faiss.Index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = max(16, int(math.sqrt(n)))
        store = choose_storage(n, d) if storage == "auto" else storage
        quantizer = faiss.IndexFlatIP(d)
        if store == "flat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        elif store == "fp16":
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        elif store == "pq":
            index = faiss.IndexIVFPQ(quantizer, d, nlist, _pq_subquantizers(d), 8, faiss.METRIC_INNER_PRODUCT)
        else:
            raise ValueError(f"unknown storage {store!r}; known: auto, flat, fp16, pq")
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = train_unit[np.sort(rng.choice(n, size=min(n, IVF_TRAIN_PER_LIST * nlist), replace=False))]
        index.train(sample)
        index.nprobe = min(IVF_NPROBE, nlist)
        params = {"nlist": nlist, "nprobe": index.nprobe, "trained_on": len(sample), "storage": store}
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
    idx, info = build_index(_unit(train_features), index, num_queries=len(test_features))
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
