"""evaluate(): every protocol, every label budget, every seed, for any encoder on any dataset."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssl_transfer.data import DataBundle, build_data
from ssl_transfer.data.datasets import ArrayDataset, FileDataset
from ssl_transfer.errors import UserError
from ssl_transfer.evaluation.encoders import resolve_encoder
from ssl_transfer.evaluation.features import FeatureCache, extract_features
from ssl_transfer.evaluation.finetune import finetune
from ssl_transfer.evaluation.knn import knn_classify
from ssl_transfer.evaluation.linear import linear_probe
from ssl_transfer.evaluation.progress import EvalProgress
from ssl_transfer.evaluation.subsets import per_class_subset
from ssl_transfer.export import Encoder

if TYPE_CHECKING:
    from ssl_transfer.recipe import DataConfig, EvalConfig


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
        "normalisation": {
            "mean": enc.preprocess.mean.flatten().tolist(),
            "std": enc.preprocess.std.flatten().tolist(),
            "from": "the encoder's pretraining data" if "method" in enc.meta else "the encoder's definition",
        },
    }


def _summary(rows: list[dict]) -> list[dict]:
    out: dict[tuple, list[float]] = {}
    for r in rows:
        out.setdefault((r["protocol"], r["labels_per_class"]), []).append(r["top1"])
    return [
        {
            "protocol": p,
            "labels_per_class": n,
            "mean": statistics.fmean(v),
            "std": statistics.pstdev(v) if len(v) > 1 else 0.0,
            "seeds": len(v),
        }
        for (p, n), v in out.items()
    ]


def eval_options(options: EvalConfig | dict[str, Any] | None = None, **overrides: Any) -> EvalConfig:
    """The evaluator's options: the recipe's ``eval`` section (its defaults are the only ones), with top-level
    fields replaced by ``overrides`` (``protocols=["knn"]``, ``knn={"k": 200}``). One-line RecipeError on bad values."""
    from ssl_transfer.recipe import EvalConfig, load_recipe

    base = options.model_dump(mode="json") if isinstance(options, EvalConfig) else dict(options or {})
    return load_recipe({"eval": {**base, **overrides}}).eval


def evaluate(
    encoder: str | Path | nn.Module,
    data: DataConfig | dict[str, Any] | DataBundle,
    options: EvalConfig | dict[str, Any] | None = None,
    *,
    cache: FeatureCache | None = None,
    out_dir: str | Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate ``encoder`` on ``data`` (a recipe data section or dict, or a ``DataBundle`` already built, e.g. the
    one pretraining used) with each protocol.

    ``options`` is the recipe's ``eval`` section (:class:`ssl_transfer.recipe.EvalConfig`, or a dict of it);
    keyword ``overrides`` replace its top-level fields: ``protocols``, ``labels_per_class`` (label budgets per
    class, None = all labels), ``seeds``, ``knn`` ({k, temperature}), ``linear`` ({l2, max_iter}), ``finetune``
    ({strategies, epochs, lr, layer_decay, warmup_epochs}). Each budget draws a class-balanced subset per seed
    (one draw for all labels). kNN and linear use features computed once per split (N, D); fine-tuning and
    scratch train copies. Returns ``{"rows": [...], "summary": [...], "transfer": {...}, ...}``; with
    ``out_dir`` also writes eval.json, report.md and label_efficiency.png (see :mod:`ssl_transfer.evaluation.report`).
    """
    from ssl_transfer.recipe import DataConfig, load_recipe

    opts = eval_options(options, **overrides)
    protocols, labels_per_class, seeds = opts.protocols, opts.labels_per_class, opts.seeds
    knn_opts, lin, ft = opts.knn, opts.linear, opts.finetune
    if isinstance(data, DataBundle):
        bundle = data
    else:
        bundle = build_data(data if isinstance(data, DataConfig) else load_recipe({"data": data}).data)
    if bundle.test is None:
        raise UserError(f"data.source={bundle.source} has no test split (imagefolder: set data.test_root)")
    enc = resolve_encoder(encoder, bundle.input_shape, bundle.mean, bundle.std)
    device = next(enc.parameters()).device
    cache = cache or FeatureCache()
    transfer = adaptation(enc, bundle)
    tag = json.dumps(transfer, sort_keys=True)

    def feats(ds):
        return cache.get(
            enc.backbone, ds, tag, lambda: extract_features(enc.backbone, ds, preprocess=enc.preprocess, device=device)
        )

    need_features = any(p in protocols for p in ("knn", "linear"))
    if need_features:
        (f_tr, y_tr), (f_te, y_te) = feats(bundle.train), feats(bundle.test)
    y_all = bundle.train.labels if isinstance(bundle.train, ArrayDataset) else torch.as_tensor(bundle.train.labels)
    num_classes = bundle.num_classes or int(y_all.max()) + 1
    rows: list[dict] = []
    per_seed: list[str] = [p for p in protocols if p in ("knn", "linear")]
    per_seed += [f"finetune:{s}" for s in ft.strategies] if "finetune" in protocols else []
    per_seed += ["scratch"] if "scratch" in protocols else []
    progress = EvalProgress(sum(len(seeds) if n is not None else 1 for n in labels_per_class) * len(per_seed))
    progress.start()  # after feature extraction: each cell's seconds are its own
    for n in labels_per_class:
        for seed in seeds if n is not None else seeds[:1]:
            idx = per_class_subset(y_all, n, seed)
            base = {"labels_per_class": n, "seed": seed, "n_labeled": len(idx)}
            if "knn" in protocols:
                rows.append(
                    {
                        "protocol": "knn",
                        **base,
                        **knn_classify(f_tr[idx], y_tr[idx], f_te, y_te, knn_opts.k, knn_opts.temperature),
                    }
                )
                progress.cell_done(rows[-1])
            if "linear" in protocols:
                rows.append(
                    {
                        "protocol": "linear",
                        **base,
                        **linear_probe(f_tr[idx], y_tr[idx], f_te, y_te, l2s=lin.l2, max_iter=lin.max_iter, seed=seed),
                    }
                )
                progress.cell_done(rows[-1])
            sub = take(bundle.train, idx) if ("finetune" in protocols or "scratch" in protocols) else None
            runs = [f"finetune:{s}" for s in ft.strategies] if "finetune" in protocols else []
            runs += ["scratch"] if "scratch" in protocols else []
            for run in runs:
                assert sub is not None  # taken above whenever finetune or scratch runs
                strategy = run.split(":", 1)[1] if run.startswith("finetune:") else "scratch"
                res = finetune(
                    enc,
                    enc.embed_dim,
                    sub,
                    bundle.test,
                    enc.preprocess,
                    num_classes,
                    strategy=strategy,
                    epochs=ft.epochs,
                    lr=ft.lr,
                    layer_decay=ft.layer_decay,
                    warmup_epochs=ft.warmup_epochs,
                    seed=seed,
                    device=device,
                    on_epoch=lambda e, total, run=run, n=n, seed=seed: progress.epoch(run, n, seed, e, total),
                )
                rows.append({"protocol": run, **base, **res})
                progress.cell_done(rows[-1])
    result = {
        "encoder": str(encoder) if not isinstance(encoder, nn.Module) else type(encoder).__name__,
        "encoder_meta": {k_: enc.meta.get(k_) for k_ in ("backbone", "method", "embed_dim")},
        "data": {**bundle.describe(), "config": bundle.config.model_dump(mode="json") if bundle.config else None},
        "transfer": transfer,
        "settings": opts.model_dump(mode="json", exclude={"data"}),
        "rows": rows,
        "summary": _summary(rows),
        "feature_cache": {"hits": cache.hits, "misses": cache.misses},
    }
    if out_dir is not None:
        from ssl_transfer.evaluation.report import write_report

        write_report(result, Path(out_dir))
    return result
