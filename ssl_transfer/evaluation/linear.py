"""Linear probe on frozen, cached features; lr and weight decay chosen on a stratified validation split.

The encoder never runs in training mode here: features come from :func:`extract_features` (eval mode), so its
BatchNorm statistics cannot move (lightly #1440 was a probe that let them drift).
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_transfer.evaluation.accuracy import topk_correct
from ssl_transfer.evaluation.subsets import stratified_split


def train_linear(
    x: Tensor, y: Tensor, num_classes: int, lr: float, weight_decay: float, epochs: int = 100, batch_size: int = 256, seed: int = 0
) -> nn.Linear:
    """A linear classifier (D -> num_classes) fit with AdamW and a cosine schedule on features x (N, D), labels y (N,)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            b = perm[i : i + batch_size]
            loss = F.cross_entropy(clf(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return clf


def _acc(clf: nn.Linear, x: Tensor, y: Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = clf(x)
    top1, top5 = topk_correct(logits, y)
    return top1 / len(y), top5 / len(y)


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    lrs: Sequence[float] = (1e-3, 1e-2, 1e-1),
    weight_decays: Sequence[float] = (0.0, 1e-4, 1e-2),
    val_fraction: float = 0.2,
    epochs: int = 100,
    seed: int = 0,
) -> dict:
    """Top-1/top-5 test accuracy of a linear classifier on standardised frozen features.

    Each (lr, weight decay) pair is trained on the train part of a stratified split and scored on its val part;
    the best pair is retrained on all training features. Features are standardised with the training mean/std
    (a BatchNorm without affine). With fewer than 2 labels in some class there is no split: the middle of the
    grid is used and the result says so.
    """
    keep = train_labels >= 0
    x, y = train_features[keep].float(), train_labels[keep].long()
    mu = x.mean(0)
    sd = x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(x.shape[1])
    x, xt = (x - mu) / sd, (test_features.float() - mu) / sd
    num_classes = int(max(y.max(), test_labels.max())) + 1
    all_idx = torch.arange(len(y))
    split = stratified_split(all_idx, y, val_fraction, seed)
    sweep = []
    if split is None:
        best = (lrs[len(lrs) // 2], weight_decays[len(weight_decays) // 2])
    else:
        tr, va = split
        for lr, wd in itertools.product(lrs, weight_decays):
            clf = train_linear(x[tr], y[tr], num_classes, lr, wd, epochs, seed=seed)
            sweep.append({"lr": lr, "weight_decay": wd, "val_top1": _acc(clf, x[va], y[va])[0]})
        top = max(sweep, key=lambda r: r["val_top1"])
        best = (top["lr"], top["weight_decay"])
    clf = train_linear(x, y, num_classes, best[0], best[1], epochs, seed=seed)
    top1, top5 = _acc(clf, xt, test_labels.long())
    return {"top1": top1, "top5": top5, "lr": best[0], "weight_decay": best[1], "sweep": sweep or "skipped: a class has fewer than 2 labels",
            "n_train": len(y), "n_test": len(test_labels), "epochs": epochs}
