"""The linear probe: full-batch L-BFGS logistic regression that solves scikit-learn's problem, a regularisation
sweep whose choice lies inside its range (extended once at an edge), and the range recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from ssl_transfer.evaluation.linear import _acc, fit_logistic, linear_probe
from ssl_transfer.evaluation.report import linear_notes
from ssl_transfer.evaluation.subsets import stratified_split


def _blobs(n: int, d: int = 16, k: int = 4, seed: int = 0, noise: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g)
    y = torch.arange(n) % k
    return centers[y] + noise * torch.randn(n, d, generator=g), y


def test_fit_solves_sklearns_problem():
    x, y = _blobs(600)
    C = 0.5
    ours = fit_logistic(x, y, 4, l2=1.0 / (C * len(x)), max_iter=1000)
    ref = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(x.numpy(), y.numpy())
    # the multinomial solution is defined up to a constant per feature/bias across classes: compare centred
    w, b = ours.weight.detach().numpy(), ours.bias.detach().numpy()
    np.testing.assert_allclose(w - w.mean(0), ref.coef_ - ref.coef_.mean(0), atol=2e-3)
    np.testing.assert_allclose(b - b.mean(), ref.intercept_ - ref.intercept_.mean(), atol=2e-3)


def test_sweep_choice_lies_inside_the_range_and_an_edge_extends_it_once():
    xa, ya = _blobs(1200, noise=2.5)  # test images from the same class centres as the training ones
    x, y, xt, yt = xa[:800], ya[:800], xa[800:], ya[800:]
    res = linear_probe(x, y, xt, yt)
    lo, hi = res["l2_range"]
    assert lo < res["l2"] < hi and res["range_extended"] is None and not res["at_edge"]
    sk = LogisticRegression(C=1.0, max_iter=5000).fit(((x - x.mean(0)) / x.std(0)).numpy(), y.numpy())
    sk_acc = float((sk.predict(((xt - x.mean(0)) / x.std(0)).numpy()) == yt.numpy()).mean())
    assert res["top1"] >= sk_acc - 0.01

    # a range of negligible penalties: none is better than a stronger one (ties go to the stronger), so the best
    # is the upper edge and the range is extended up by two decades, once
    weak = linear_probe(x, y, xt, yt, l2s=[1e-9, 1e-8])
    assert weak["range_extended"] == "up" and weak["l2_range"] == pytest.approx([1e-9, 1e-6]) and weak["l2"] > 1e-8
    row = {**weak, "protocol": "linear", "labels_per_class": None, "seed": 0}
    assert "upper edge, so it was extended up once" in linear_notes([row])


def test_the_sweep_picks_the_penalty_whose_own_solution_scores_best_on_validation():
    # labels from a linear rule plus a little noise: weak penalties fit it best. A sweep that stopped a warm-started
    # fit at a looser tolerance than the refit's scored 1e-4 and 1e-5 with their neighbour's weights (identical
    # validation scores) and chose 1e-3, whose own solution is 0.9 points worse on validation.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 10, generator=g)
    x = torch.randn(4000, 32, generator=g)
    y = (x @ w + 0.5 * torch.randn(4000, 10, generator=g)).argmax(1)
    res = linear_probe(x, y, x[:100], y[:100])
    xs = (x - x.mean(0)) / x.std(0)
    tr, va = stratified_split(torch.arange(len(y)), y, 0.2, 0)
    own = {l2: _acc(fit_logistic(xs[tr], y[tr], 10, l2), xs[va], y[va])[0] for l2 in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)}
    assert own[res["l2"]] >= max(own.values()) - 1.5 / len(va), (res["l2"], own)
    scored = {s["l2"]: s["val_top1"] for s in res["sweep"]}
    for l2, acc in scored.items():  # each score is its own penalty's, not a neighbour's copy
        assert acc == pytest.approx(own.get(l2, acc), abs=1.5 / len(va)), (l2, scored, own)


def test_tiny_label_budgets_skip_the_sweep():
    x, y = _blobs(4, k=4)  # one label per class
    res = linear_probe(x, y, *_blobs(40, seed=2))
    assert isinstance(res["sweep"], str) and res["l2"] == 1e-4
