import torch

from ssl_transfer.evaluation.knn import knn_classify, knn_scores


def brute_force(train, train_y, test, num_classes, k, t):
    tn = torch.nn.functional.normalize(train, dim=1)
    qn = torch.nn.functional.normalize(test, dim=1)
    sims = qn @ tn.T
    top, idx = sims.topk(k, dim=1)
    scores = torch.zeros(len(test), num_classes)
    scores.scatter_add_(1, train_y[idx], (top / t).exp())
    return scores


def test_knn_matches_brute_force_reference():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(500, 16, generator=g)
    train_y = torch.randint(0, 7, (500,), generator=g)
    test = torch.randn(120, 16, generator=g)
    ours, _ = knn_scores(train, train_y, test, 7, k=10, temperature=0.1)
    ref = brute_force(train, train_y, test, 7, 10, 0.1)
    assert torch.equal(ours.argmax(1), ref.argmax(1))
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_knn_accuracy_on_separable_clusters_and_ignores_unlabeled():
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(5, 32, generator=g) * 5
    y = torch.arange(5).repeat(40)
    x = centers[y] + torch.randn(200, 32, generator=g)
    yq = torch.arange(5).repeat(10)
    xq = centers[yq] + torch.randn(50, 32, generator=g)
    y_unl = y.clone()
    y_unl[::2] = -1
    res = knn_classify(x, y_unl, xq, yq, k=5)
    assert res["top1"] == 1.0 and res["top5"] == 1.0 and res["n_train"] == 100
    shuffled = knn_classify(x, y[torch.randperm(200, generator=g)], xq, yq, k=5)
    assert shuffled["top1"] < 0.6


def test_approximate_indexes_agree_with_exact_and_are_recorded():
    g = torch.Generator().manual_seed(2)
    centers = torch.randn(10, 24, generator=g) * 3
    y = torch.randint(0, 10, (5000,), generator=g)
    x = centers[y] + torch.randn(5000, 24, generator=g)
    yq = torch.randint(0, 10, (500,), generator=g)
    xq = centers[yq] + torch.randn(500, 24, generator=g)
    exact = knn_classify(x, y, xq, yq, k=20)
    assert exact["index"]["kind"] == "exact" and exact["index"]["n"] == 5000
    for kind in ("ivf", "hnsw"):
        approx = knn_classify(x, y, xq, yq, k=20, index=kind)
        assert approx["index"]["kind"] == kind and approx["index"]["params"]
        assert abs(approx["top1"] - exact["top1"]) < 0.01


def test_auto_index_switches_to_ivf_for_large_sets(monkeypatch):
    import ssl_transfer.evaluation.knn as knn

    monkeypatch.setattr(knn, "EXACT_MAX", 1000)
    x = torch.randn(3000, 8)
    _, info = knn.build_index(knn._unit(x))
    assert info.kind == "ivf" and info.params["nlist"] == int(4 * 3000**0.5)
