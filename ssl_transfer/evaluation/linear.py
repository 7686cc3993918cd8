"""Linear probe on frozen, cached features: L2-regularised multinomial logistic regression fit full-batch with
L-BFGS, its regularisation chosen on a stratified validation split (the protocol of CLIP and of SimCLR's appendix).

Features are standardised with the training mean/std. The objective is the mean cross-entropy plus
``l2 / 2 * ||W||^2`` (bias not penalised); scikit-learn's ``LogisticRegression(C)`` is the same problem at
``l2 = 1 / (C * N)``. The search climbs from the value of scikit-learn's default C = 1 towards better validation
accuracy, each fit
warm-started from its neighbour's solution. When the best value is at an edge of the range, the range is
extended once by ``extend_steps`` decades in that direction and the result says so.

The encoder never runs in training mode here: features come from :func:`extract_features` (eval mode), so its
BatchNorm statistics cannot move (lightly #1440 was a probe that let them drift).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_transfer.evaluation.accuracy import topk_correct
from ssl_transfer.evaluation.subsets import stratified_split

# Every fit's stopping rule, the sweep's included: largest gradient entry (scikit-learn's criterion). A looser
# sweep (1e-3, until stop 56) stopped a fit warm-started from its neighbour's solution at once where the penalty
# changed by less than that tolerance over the weights' size, so weaker penalties were scored with a stronger one's
# weights and ties sent the choice up (cifar50k-moco -> MNIST: 1e-3 chosen, 96.99%; now 1e-5, 97.57%; scikit-learn's
# C=1: 97.60%).
FIT_TOL = 1e-4


def fit_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    l2: float,
    max_iter: int = 1000,
    tol: float = FIT_TOL,
    init: nn.Linear | None = None,
) -> nn.Linear:
    """Minimise mean cross-entropy + l2/2 ||W||^2 over a linear layer (D -> num_classes), full batch, L-BFGS
    with a strong-Wolfe line search, until the largest gradient entry is below ``tol`` (scikit-learn's criterion).
    x: (N, D) float, y: (N,) long; ``init`` warm-starts from another fit.

    The loss and its gradient are written out (softmax minus one-hot) instead of autograd: the same values at
    less than half the time per evaluation on CPU, where the probe's cost is these evaluations.
    """
    clf = nn.Linear(x.shape[1], num_classes).to(x.device)
    with torch.no_grad():
        if init is not None:
            clf.load_state_dict(init.state_dict())
        else:
            clf.weight.zero_()
            clf.bias.zero_()
    w, b = clf.weight, clf.bias
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    n = len(x)

    @torch.no_grad()
    def closure() -> Tensor:
        z = torch.addmm(b, x, w.T)  # (N, K) logits
        lse = torch.logsumexp(z, dim=1)
        loss = (lse - z.gather(1, y[:, None]).squeeze(1)).mean() + 0.5 * l2 * w.pow(2).sum()
        g = torch.exp(z - lse[:, None]).sub_(onehot).div_(n)  # d loss / d logits
        w.grad = torch.addmm(w, g.T, x, beta=l2)  # g^T x + l2 w
        b.grad = g.sum(0)
        return loss

    opt.step(closure)
    return clf


def _acc(clf: nn.Linear, x: Tensor, y: Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = clf(x)
    top1, top5 = topk_correct(logits, y)
    return top1 / len(y), top5 / len(y)


def _climb(
    x: Tensor,
    y: Tensor,
    xv: Tensor,
    yv: Tensor,
    num_classes: int,
    grid: list[float],
    max_iter: int,
    fitted: dict[float, tuple[float, nn.Linear]],
    start: int,
    tol: float = FIT_TOL,
) -> int:
    """Hill-climb over ``grid`` (ascending) from index ``start``: fit the neighbours of the best point so far
    (warm-started from it) until neither beats it on validation (ties go to the stronger penalty), each fit to
    ``tol``, the same as the final refit on all data. Fits are cached in ``fitted``
    (l2 -> (val top-1, model)). Returns the best index."""

    def fit(j: int, init: nn.Linear | None) -> None:
        if grid[j] not in fitted:
            clf = fit_logistic(x, y, num_classes, grid[j], max_iter, tol=tol, init=init)
            fitted[grid[j]] = (_acc(clf, xv, yv)[0], clf)

    def key(j: int) -> tuple[float, float]:
        return fitted[grid[j]][0], grid[j]

    i = start
    fit(i, None)
    while True:
        for j in (i - 1, i + 1):
            if 0 <= j < len(grid):
                fit(j, fitted[grid[i]][1])
        nxt = max((j for j in (i - 1, i, i + 1) if 0 <= j < len(grid)), key=key)
        if nxt == i:
            return i
        i = nxt


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    l2s: Sequence[float] | None = None,
    val_fraction: float = 0.2,
    max_iter: int | None = None,
    extend_steps: int = 2,
    seed: int = 0,
) -> dict:
    """Top-1/top-5 test accuracy of a linear classifier on standardised frozen features (N, D) with labels (N,).

    Penalties from ``l2s`` (default: the recipe's ``eval.linear.l2``, as ``max_iter``) are fit on the train part
    of a stratified split and scored on its val part, climbing
    from scikit-learn's default (l2 = 1/N) towards better validation accuracy until neither neighbour is better (ties go
    to the stronger penalty; validation accuracy is close to unimodal in the penalty, and this fits 3-5 values
    instead of all); the best is refit on all training features, warm-started. A best value at an edge of the
    range extends it once by ``extend_steps`` decades in that direction. With fewer than 2 labels in some class there
    is no split: the middle of the range is used and the result says so. Returns top1, top5, the chosen ``l2``,
    the searched range, whether it was extended, the sweep and the time taken.
    """
    if l2s is None or max_iter is None:
        from ssl_transfer.recipe import LinearConfig  # the defaults live in the recipe schema

        defaults = LinearConfig()
        l2s, max_iter = l2s or defaults.l2, max_iter or defaults.max_iter
    t0 = time.perf_counter()
    keep = train_labels >= 0
    x, y = train_features[keep].float(), train_labels[keep].long()
    mu = x.mean(0)
    sd = x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(x.shape[1], device=x.device)
    x, xt = (x - mu) / sd, (test_features.float().to(x.device) - mu) / sd
    num_classes = int(max(y.max(), test_labels.max())) + 1
    grid = sorted(set(float(v) for v in l2s))
    split = stratified_split(torch.arange(len(y)), y, val_fraction, seed)
    sweep: list[dict] | str
    extended, init = None, None
    if split is None:
        best = grid[len(grid) // 2]
        sweep = "skipped: a class has fewer than 2 labels"
    else:
        tr, va = split
        fitted: dict[float, tuple[float, nn.Linear]] = {}
        # start at scikit-learn's default (C = 1, i.e. l2 = 1/N), where the best value usually lies
        start = min(range(len(grid)), key=lambda j: abs(math.log(grid[j] * len(tr))))
        i = _climb(x[tr], y[tr], x[va], y[va], num_classes, grid, max_iter, fitted, start)
        if len(grid) > 1 and i in (0, len(grid) - 1) and extend_steps > 0:
            low, edge = i == 0, grid[i]
            extended = "down" if low else "up"
            grid = sorted([*grid, *(edge * 10.0 ** (-(k + 1) if low else (k + 1)) for k in range(extend_steps))])
            i = _climb(x[tr], y[tr], x[va], y[va], num_classes, grid, max_iter, fitted, grid.index(edge))
        best = grid[i]
        sweep = [{"l2": l2, "val_top1": acc} for l2, (acc, _) in sorted(fitted.items(), reverse=True)]
        init = fitted[best][1]
    clf = fit_logistic(x, y, num_classes, best, max_iter, init=init)
    top1, top5 = _acc(clf, xt, test_labels.long().to(x.device))
    return {
        "top1": top1,
        "top5": top5,
        "l2": best,
        "l2_range": [grid[0], grid[-1]],
        "range_extended": extended,
        "at_edge": best in (grid[0], grid[-1]) and len(grid) > 1,
        "sweep": sweep,
        "n_train": len(y),
        "n_test": len(test_labels),
        "solver": f"lbfgs, tol {FIT_TOL:g}, max_iter {max_iter}",
        "seconds": round(time.perf_counter() - t0, 3),
        "sklearn_C": 1.0 / (best * len(y)) if len(y) else math.nan,
    }
