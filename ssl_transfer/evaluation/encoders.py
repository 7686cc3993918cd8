"""Any encoder as an :class:`~ssl_transfer.export.Encoder`: our exports, timm or torchvision models, modules.

The evaluator needs three things of an encoder: a forward pass to (B, D), ``embed_dim``, and the
preprocessing its inputs need (channels, size, normalisation). Our exports carry them; for other models
they are taken from the model (timm's pretrained_cfg) or the evaluation data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_transfer.errors import UserError
from ssl_transfer.export import Encoder, load_encoder

# ImageNet normalisation (timm.data.IMAGENET_DEFAULT_MEAN / _STD; not imported from timm to keep this import light)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _embed_dim(model: nn.Module, shape: tuple[int, int, int]) -> int:
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, *shape))
    if out.ndim != 2:
        raise UserError(f"encoder returns shape {tuple(out.shape)} for one image; need (1, D)")
    return int(out.shape[1])


def wrap_module(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    name: str = "module",
) -> Encoder:
    """An nn.Module mapping (B, C, H, W) -> (B, D) with the preprocessing it expects."""
    meta: dict[str, Any] = {
        "backbone": {"name": name, "kwargs": {}},
        "embed_dim": _embed_dim(model, input_shape),
        "input": {
            "channels": input_shape[0],
            "height": input_shape[1],
            "width": input_shape[2],
            "mean": list(mean),
            "std": list(std),
        },
    }
    return Encoder(model, meta)


def _timm(name: str, size: tuple[int, int]) -> Encoder:
    from ssl_transfer.backbones import timm_with_ours

    timm = timm_with_ours()

    if not timm.is_model(name):
        raise UserError(f"timm has no model {name!r}")
    model = timm.create_model(name, num_classes=0, pretrained=False)
    cfg = model.pretrained_cfg
    return wrap_module(model, (3, *size), cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD), f"timm:{name}")


def _torchvision(name: str, size: tuple[int, int]) -> Encoder:
    import torchvision.models as tvm

    try:
        model = tvm.get_model(name, weights=None)
    except ValueError as e:
        raise UserError(f"torchvision: {e}") from None
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise UserError(f"torchvision model {name!r} has no linear classifier to strip")
    parent_name, _, attr = last[-1].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())  # the classifier goes; the penultimate features remain
    return wrap_module(model, (3, *size), IMAGENET_MEAN, IMAGENET_STD, f"torchvision:{name}")


def resolve_encoder(
    spec: str | Path | nn.Module, data_shape: tuple[int, int, int], mean: Sequence[float], std: Sequence[float]
) -> Encoder:
    """``spec``: a run dir / encoder file of ours, ``timm:NAME``, ``torchvision:NAME`` (random init: no
    downloads), an :class:`Encoder`, or any module (given the evaluation data's shape and statistics)."""
    if isinstance(spec, Encoder):
        return spec
    if isinstance(spec, nn.Module):
        return wrap_module(spec, data_shape, mean, std)
    s = str(spec)
    if s.startswith("timm:"):
        return _timm(s[5:], data_shape[1:])
    if s.startswith("torchvision:"):
        return _torchvision(s[12:], data_shape[1:])
    if not Path(s).exists():
        raise UserError(f"no encoder at {s!r} (a run dir, encoder.safetensors/.json, timm:NAME or torchvision:NAME)")
    return load_encoder(s, "cuda" if torch.cuda.is_available() else "cpu")
