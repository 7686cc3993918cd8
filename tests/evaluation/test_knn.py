import pytest
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


def clusters(seed: int, n: int, n_query: int, dim: int):
    """Training and query points (with labels) around 10 Gaussian class centres."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, dim, generator=g) * 3
    y = torch.randint(0, 10, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g)
    yq = torch.randint(0, 10, (n_query,), generator=g)
    return x, y, centers[yq] + torch.randn(n_query, dim, generator=g), yq


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
    x, y, xq, yq = clusters(2, 5000, 500, 24)
    exact = knn_classify(x, y, xq, yq, k=20)
    assert exact["index"]["kind"] == "exact" and exact["index"]["n"] == 5000
    for kind in ("ivf", "hnsw"):
        approx = knn_classify(x, y, xq, yq, k=20, index=kind)
        assert approx["index"]["kind"] == kind and approx["index"]["params"]
        assert abs(approx["top1"] - exact["top1"]) < 0.01


def test_auto_index_is_exact_for_few_queries_and_ivf_with_a_capped_training_sample_for_many(monkeypatch):
    import ssl_transfer.evaluation.knn as knn

    x = knn._unit(torch.randn(20_000, 8))
    _, few = knn.build_index(x, num_queries=100)
    assert few.kind == "exact"
    monkeypatch.setattr(knn, "IVF_TRAIN_PER_LIST", 40)
    _, many = knn.build_index(x, num_queries=20_000)
    nlist = int(20_000**0.5)
    assert many.kind == "ivf" and many.params["nlist"] == nlist and many.params["trained_on"] == 40 * nlist
    assert many.params["nprobe"] == knn.IVF_NPROBE and many.params["storage"] == "flat"


@pytest.mark.parametrize("storage", ["fp16", "pq"])
def test_compressed_storage_is_chosen_when_memory_is_short_and_still_classifies(monkeypatch, storage: str):
    import ssl_transfer.evaluation.knn as knn

    x, y, xq, yq = clusters(3, 8000, 400, 32)
    need = 4 * 8000 * 32 / knn.MEMORY_FRACTION  # bytes of free RAM at which float32 just fits
    monkeypatch.setattr(knn, "available_memory", lambda: int(need * (0.6 if storage == "fp16" else 0.2)))
    assert knn.choose_storage(8000, 32) == storage
    exact = knn.knn_classify(x, y, xq, yq, k=20, index="exact")
    approx = knn.knn_classify(x, y, xq, yq, k=20, index="ivf")
    assert approx["index"]["params"]["storage"] == storage
    assert abs(approx["top1"] - exact["top1"]) < 0.02
