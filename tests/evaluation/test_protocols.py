"""The shared evaluator: frozen means frozen, BatchNorm untouched, rates reach the optimizer, any encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_transfer.backbones import build_backbone
from ssl_transfer.data.datasets import ArrayDataset
from ssl_transfer.evaluation.blocks import encoder_blocks
from ssl_transfer.evaluation.encoders import wrap_module
from ssl_transfer.evaluation.features import FeatureCache, extract_features
from ssl_transfer.evaluation.finetune import Classifier, finetune, setup_strategy, train_classifier
from ssl_transfer.evaluation.linear import linear_probe
from ssl_transfer.evaluation.protocol import evaluate
from ssl_transfer.evaluation.subsets import per_class_subset, stratified_split
from ssl_transfer.recipe import RecipeError


def trained_bn_encoder(shape=(1, 8, 8)) -> nn.Module:
    torch.manual_seed(0)
    enc = build_backbone("cnn_tiny", shape)
    with torch.no_grad():
        enc.train()(torch.randn(32, *shape) * 2 + 1)  # non-trivial running statistics
    return enc


def digits() -> ArrayDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    return ArrayDataset(torch.tensor(d.images * 255 / 16, dtype=torch.uint8)[:, None], torch.tensor(d.target))


def state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_feature_extraction_and_linear_probe_leave_batchnorm_untouched():
    enc = trained_bn_encoder()
    before = state(enc)
    ds = digits()
    f, y = extract_features(enc, ds, [0.3], [0.37], batch_size=256)
    res = linear_probe(f[:1000], y[:1000], f[1000:], y[1000:])
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "BN running stats or weights changed"
    assert enc.training, "the encoder's mode is restored"
    assert res["top1"] > 0.5 and 3 <= len(res["sweep"]) <= 7 and res["l2_range"][0] < res["l2"] < res["l2_range"][1]


class MoveSpy(nn.Module):
    """An encoder that records the devices it is moved to (a CPU machine has one device; the spy stands in)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.moves = inner, []

    def to(self, *args, **kwargs):  # type: ignore[override]
        self.moves.append(torch.device(args[0] if args else kwargs["device"]))
        return super().to(*args, **kwargs)

    def forward(self, x):
        return self.inner(x)


def test_feature_extraction_moves_the_encoder_to_its_device_and_back():
    # load_encoder returns a CPU module; on a CUDA machine the pass ran CUDA images through CPU weights and failed
    enc = MoveSpy(trained_bn_encoder())
    extract_features(enc, digits(), [0.3], [0.37], device="cpu")
    assert enc.moves == [torch.device("cpu"), torch.device("cpu")], "to the compute device, then back home"


@pytest.mark.parametrize("strategy,frozen", [("head", 3), ("freeze:2", 2), ("freeze:0", 0)])
def test_freezing_really_freezes(strategy, frozen):
    enc = trained_bn_encoder()
    ds = digits()
    model = Classifier(enc, enc.embed_dim, 10)
    _, info = setup_strategy(model, strategy, 1e-3, 1e-4)
    assert info["frozen_blocks"] == frozen
    before = state(enc)
    finetune(enc, enc.embed_dim, ds, ds, lambda x: (x - 0.3) / 0.37, 10, strategy=strategy, epochs=1, min_steps=5)
    assert all(torch.equal(before[k], enc.state_dict()[k]) for k in before), "the caller's encoder is never modified"
    # inside finetune()'s own training (the copy it trains): frozen blocks (weights and BN buffers)
    # bit-identical to the encoder, the rest moved
    model, _ = train_classifier(
        enc,
        enc.embed_dim,
        ds,
        lambda x: (x - 0.3) / 0.37,
        10,
        strategy=strategy,
        lr=1e-2,
        epochs=1,
        min_steps=3,
        weight_decay=0.0,
    )
    now = model.encoder.state_dict()
    for i in range(len(encoder_blocks(enc))):
        prefix = f"stages.{i}."
        keys = [k for k in now if k.startswith(prefix)]
        same = all(torch.equal(before[k], now[k]) for k in keys)
        assert same == (i < frozen), f"block {i} (frozen={i < frozen}) changed={not same}"


def test_layerwise_rates_reach_the_optimizer():
    enc = build_backbone("resnet18", (3, 32, 32))
    model = Classifier(enc, enc.embed_dim, 10)
    opt, info = setup_strategy(model, "llrd", 1e-3, 0.05, layer_decay=0.5)
    n = info["blocks"]
    assert n == 5
    lrs = {}
    names = {id(p): name for name, p in model.named_parameters()}
    for g in opt.param_groups:
        for p in g["params"]:
            lrs[names[id(p)]] = g["lr"]
    assert lrs["encoder.model.conv1.weight"] == pytest.approx(1e-3 * 0.5**5)  # stem: smallest
    assert lrs["encoder.model.layer4.1.conv2.weight"] == pytest.approx(1e-3 * 0.5)
    assert lrs["head.weight"] == pytest.approx(1e-3)
    assert sorted(set(info["block_lrs"].values())) == pytest.approx([1e-3 * 0.5**i for i in range(5, -1, -1)])
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if all(p.ndim <= 1 for p in g["params"]))


def test_feature_cache_hits_on_same_weights_and_data_and_misses_otherwise(tmp_path: Path):
    enc, ds = trained_bn_encoder(), digits()
    cache = FeatureCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return extract_features(enc, ds, [0.3], [0.37])

    a = cache.get(enc, ds, "t", compute)
    b = FeatureCache(tmp_path).get(enc, ds, "t", compute)  # from disk
    assert len(calls) == 1 and torch.equal(a[0], b[0])
    with torch.no_grad():
        next(enc.parameters()).add_(1.0)
    cache.get(enc, ds, "t", compute)
    assert len(calls) == 2


def test_label_subsets_and_splits():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 5 + [-1] * 10)
    idx = per_class_subset(y, 10, seed=0)
    assert torch.bincount(y[idx]).tolist() == [10, 10, 5]
    assert torch.equal(per_class_subset(y, 10, 0), idx) and not torch.equal(per_class_subset(y, 10, 1), idx)
    assert len(per_class_subset(y, None, 0)) == 85
    tr, va = stratified_split(idx, y, 0.2, 0)
    assert set(tr.tolist()).isdisjoint(va.tolist()) and len(tr) + len(va) == len(idx)
    assert y[va].unique().tolist() == [0, 1, 2] and len(va) == 5  # every class on the validation side, 20%
    assert torch.equal(stratified_split(idx, y, 0.2, 0)[1], va)  # seeded
    assert stratified_split(per_class_subset(y, 1, 0), y, 0.2, 0) is None


def test_evaluate_any_module_with_label_budgets(tmp_path: Path):
    torch.manual_seed(0)
    enc = build_backbone("cnn_tiny", (1, 8, 8))
    r = evaluate(
        enc,
        {"source": "digits"},
        protocols=["knn", "linear", "finetune", "scratch"],
        labels_per_class=[2, 5],
        seeds=[0, 1],
        finetune={"strategies": ["full", "llrd"], "epochs": 1},
        out_dir=tmp_path,
    )
    assert {(s["protocol"], s["labels_per_class"]) for s in r["summary"]} == {
        (p, n) for p in ["knn", "linear", "finetune:full", "finetune:llrd", "scratch"] for n in [2, 5]
    }
    assert all(s["seeds"] == 2 for s in r["summary"])
    assert r["feature_cache"]["misses"] == 2  # train and test embedded once for all budgets and seeds
    assert (tmp_path / "label_efficiency.png").is_file() and "| knn |" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "eval.json").read_text())["transfer"]["channels"] == "same"


def test_cross_dataset_transfer_records_adaptation():
    enc = wrap_module(build_backbone("cnn_tiny", (3, 16, 16)), (3, 16, 16), [0.5] * 3, [0.25] * 3)
    r = evaluate(enc, {"source": "digits"}, protocols=["knn"])
    t = r["transfer"]
    assert t["encoder_input"] == [3, 16, 16] and t["data_input"] == [1, 8, 8]
    assert t["resize"].startswith("8x8 -> 16x16") and t["channels"].startswith("1->3")


@pytest.mark.parametrize("spec", ["timm:resnet18", "torchvision:resnet18"])
def test_external_encoders(spec):
    r = evaluate(spec, {"source": "digits", "limit_train": 200}, protocols=["knn"])
    assert r["rows"][0]["top1"] > 0.2 and r["encoder_meta"]["embed_dim"] == 512


def test_evaluator_defaults_are_the_recipe_defaults(tmp_path: Path):
    """One place for the evaluator's defaults: evaluate() with no options runs what a recipe's eval section says."""
    from ssl_transfer.recipe import EvalConfig

    torch.manual_seed(0)
    enc = build_backbone("cnn_tiny", (1, 8, 8))
    r = evaluate(enc, {"source": "digits", "limit_train": 300})
    assert r["settings"] == EvalConfig().model_dump(mode="json", exclude={"data"})
    assert [row["protocol"] for row in r["rows"]] == EvalConfig().protocols
    with pytest.raises(RecipeError, match=r"eval\.knn\.k"):
        evaluate(enc, {"source": "digits"}, knn={"k": 0})


def test_eval_progress_lines_and_live_epochs_on_a_terminal():
    import io

    from ssl_transfer.evaluation.progress import EvalProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    piped, tty = io.StringIO(), Tty()
    for stream in (piped, tty):
        p = EvalProgress(2, stream)
        p.epoch("finetune:full", 10, 1, 3, 20)
        p.cell_done({"protocol": "finetune:full", "labels_per_class": 10, "seed": 1, "top1": 0.5})
        p.cell_done({"protocol": "knn", "labels_per_class": None, "seed": 0, "top1": 0.25})
    lines = piped.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "eval 1/2: finetune:full, 10 labels/class, seed 1: top-1 50.00%",
        "eval 2/2: knn, all labels, seed 0: top-1 25.00%",
    ]
    assert "epoch 3/20" in tty.getvalue() and "epoch" not in piped.getvalue()
