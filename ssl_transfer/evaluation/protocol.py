"""evaluate(): every protocol, every label budget, every seed, for any encoder on any dataset."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ssl_transfer.data import DataBundle, build_data
from ssl_transfer.data.datasets import ArrayDataset, FileDataset
from ssl_transfer.errors import UserError
from ssl_transfer.evaluation.encoders import resolve_encoder
from ssl_transfer.evaluation.features import FeatureCache, extract_features
from ssl_transfer.evaluation.finetune import STRATEGY, finetune
from ssl_transfer.evaluation.knn import knn_classify
from ssl_transfer.evaluation.linear import DEFAULT_L2, linear_probe
from ssl_transfer.evaluation.subsets import per_class_subset
from ssl_transfer.export import Encoder

PROTOCOLS = ("knn", "linear", "finetune", "scratch")


def take(ds: ArrayDataset | FileDataset, idx: torch.Tensor) -> ArrayDataset | FileDataset:
    """The images at ``idx`` as a dataset of the same kind."""
    if isinstance(ds, ArrayDataset):
        return ArrayDataset(ds.images[idx], ds.labels[idx])
    return ds.take(idx.tolist())


def adaptation(enc: Encoder, data: DataBundle) -> dict[str, Any]:
    """How the dataset's images are turned into the encoder's inputs (recorded for cross-dataset transfer)."""
    c, h, w = enc.preprocess.channels, *enc.preprocess.size
    dc, dh, dw = data.input_shape
    channels = "same" if c == dc else ("1->3 (gray repeated)" if dc == 1 else "3->1 (luminance)")
    return {
        "encoder_input": [c, h, w],
        "data_input": [dc, dh, dw],
        "resize": None if (h, w) == (dh, dw) else f"{dh}x{dw} -> {h}x{w} (bilinear, antialiased)",
        "channels": channels,
        "normalisation": {"mean": enc.preprocess.mean.flatten().tolist(), "std": enc.preprocess.std.flatten().tolist(),
                          "from": "the encoder's pretraining data" if "method" in enc.meta else "the encoder's definition"},
    }


def _summary(rows: list[dict]) -> list[dict]:
    out: dict[tuple, list[float]] = {}
    for r in rows:
        out.setdefault((r["protocol"], r["labels_per_class"]), []).append(r["top1"])
    return [
        {"protocol": p, "labels_per_class": n, "mean": statistics.fmean(v), "std": statistics.pstdev(v) if len(v) > 1 else 0.0, "seeds": len(v)}
        for (p, n), v in out.items()
    ]


def evaluate(
    encoder: str | Path | nn.Module,
    data: dict | Any,
    protocols: Sequence[str] = ("knn", "linear"),
    labels_per_class: Sequence[int | None] = (None,),
    seeds: Sequence[int] = (0,),
    k: int = 20,
    temperature: float = 0.07,
    finetune_strategies: Sequence[str] = ("full",),
    finetune_epochs: int = 20,
    finetune_lr: float = 1e-3,
    layer_decay: float = 0.75,
    finetune_warmup_epochs: float = 0.0,
    linear_l2: Sequence[float] = DEFAULT_L2,
    linear_max_iter: int = 1000,
    cache: FeatureCache | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``encoder`` on ``data`` (a recipe data section or dict) with each protocol.

    ``labels_per_class``: label budgets (None = all labels); each budget draws a class-balanced subset per seed
    (one draw for all labels). kNN and linear use features computed once per split; fine-tuning and scratch
    train copies. Returns ``{"rows": [...], "summary": [...], "transfer": {...}, ...}``; with ``out_dir``
    also writes eval.json, report.md and label_efficiency.png (see :mod:`ssl_transfer.evaluation.report`).
    """
    from ssl_transfer.recipe import DataConfig

    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise UserError(f"unknown protocol {bad[0]!r}; known: {', '.join(PROTOCOLS)}")
    for s in finetune_strategies:
        if not STRATEGY.match(s) or s == "scratch":
            raise UserError(f"unknown fine-tuning strategy {s!r}; known: full, head, llrd, freeze:K")
    cfg = data if isinstance(data, DataConfig) else DataConfig.model_validate(data)
    bundle = build_data(cfg)
    if bundle.test is None:
        raise UserError(f"data.source={cfg.source} has no test split (imagefolder: set data.test_root)")
    enc = resolve_encoder(encoder, bundle.input_shape, bundle.mean, bundle.std)
    device = next(enc.parameters()).device
    cache = cache or FeatureCache()
    transfer = adaptation(enc, bundle)
    tag = json.dumps(transfer, sort_keys=True)

    def feats(ds):
        return cache.get(enc.backbone, ds, tag, lambda: extract_features(enc.backbone, ds, preprocess=enc.preprocess, device=device))

    need_features = any(p in protocols for p in ("knn", "linear"))
    if need_features:
        (f_tr, y_tr), (f_te, y_te) = feats(bundle.train), feats(bundle.test)
    y_all = bundle.train.labels if isinstance(bundle.train, ArrayDataset) else torch.as_tensor(bundle.train.labels)
    num_classes = bundle.num_classes or int(y_all.max()) + 1
    rows: list[dict] = []
    for n in labels_per_class:
        for seed in seeds if n is not None else seeds[:1]:
            idx = per_class_subset(y_all, n, seed)
            base = {"labels_per_class": n, "seed": seed, "n_labeled": len(idx)}
            if "knn" in protocols:
                rows.append({"protocol": "knn", **base, **knn_classify(f_tr[idx], y_tr[idx], f_te, y_te, k, temperature)})
            if "linear" in protocols:
                rows.append({"protocol": "linear", **base, **linear_probe(f_tr[idx], y_tr[idx], f_te, y_te, l2s=linear_l2,
                                                                                  max_iter=linear_max_iter, seed=seed)})
            sub = take(bundle.train, idx) if ("finetune" in protocols or "scratch" in protocols) else None
            runs = [f"finetune:{s}" for s in finetune_strategies] if "finetune" in protocols else []
            runs += ["scratch"] if "scratch" in protocols else []
            for run in runs:
                strategy = run.split(":", 1)[1] if run.startswith("finetune:") else "scratch"
                res = finetune(enc, enc.embed_dim, sub, bundle.test, enc.preprocess, num_classes, strategy=strategy,
                               epochs=finetune_epochs, lr=finetune_lr, layer_decay=layer_decay,
                               warmup_epochs=finetune_warmup_epochs, seed=seed, device=device)
                rows.append({"protocol": run, **base, **res})
    result = {
        "encoder": str(encoder) if not isinstance(encoder, nn.Module) else type(encoder).__name__,
        "encoder_meta": {k_: enc.meta.get(k_) for k_ in ("backbone", "method", "embed_dim")},
        "data": {**bundle.describe(), "config": cfg.model_dump(mode="json")},
        "transfer": transfer,
        "settings": {"k": k, "temperature": temperature, "finetune_epochs": finetune_epochs, "finetune_lr": finetune_lr,
                     "layer_decay": layer_decay, "finetune_warmup_epochs": finetune_warmup_epochs, "linear_l2": list(linear_l2), "linear_max_iter": linear_max_iter, "seeds": list(seeds)},
        "rows": rows,
        "summary": _summary(rows),
        "feature_cache": {"hits": cache.hits, "misses": cache.misses},
    }
    if out_dir is not None:
        from ssl_transfer.evaluation.report import write_report

        write_report(result, Path(out_dir))
    return result
