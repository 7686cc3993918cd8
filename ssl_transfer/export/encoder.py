"""The encoder as it leaves training: backbone (+ optional linear head), its preprocessing, its metadata.

``save_encoder`` writes ``<stem>.safetensors`` + ``<stem>.json`` (the run dir's ``encoder.*``);
:mod:`ssl_transfer.export.formats` writes the other formats and loads any of them back.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from PIL import Image
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from ssl_transfer.backbones import build_backbone
from ssl_transfer.data.datasets import convert_channels, resize_uint8
from ssl_transfer.errors import UserError

if TYPE_CHECKING:
    from ssl_transfer.data.loading import DataBundle
    from ssl_transfer.methods.base import PretextMethod
    from ssl_transfer.recipe import Recipe

FORMAT_VERSION = 1


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("ssl-transfer", "torch", "torchvision", "timm", "lightly", "pytorch-lightning"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class Preprocess(nn.Module):
    """Images -> the encoder's input: channel conversion, resize to the training size, normalisation.

    Accepts uint8 (B, C, H, W) in [0, 255], float (B, C, H, W) in [0, 1], or a list of PIL images.
    Returns float (B, channels, height, width).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, channels: int, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.channels = channels
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor | Sequence[Image.Image]) -> Tensor:
        if not isinstance(images, Tensor):
            from torchvision.transforms.v2.functional import pil_to_tensor

            mode = "L" if self.channels == 1 else "RGB"
            images = torch.stack([resize_uint8(pil_to_tensor(im.convert(mode))[None], self.size)[0] for im in images])
        if images.ndim == 3:
            images = images[None]
        if images.dtype == torch.uint8:
            x = convert_channels(resize_uint8(images, self.size), self.channels).float() / 255.0
        else:
            x = convert_channels(images.float(), self.channels)  # the uint8 path's conversion (luminance), on floats
            if tuple(x.shape[-2:]) != self.size:
                x = torch.nn.functional.interpolate(
                    x, size=self.size, mode="bilinear", antialias=True, align_corners=False
                )
        return (x.to(self.mean.device) - self.mean) / self.std


class HeadedBackbone(nn.Module):
    """backbone -> linear head (e.g. a VAE's posterior mean): (B, C, H, W) -> (B, head.out_features)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.embed_dim = head.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def exportable(backbone: nn.Module, head: nn.Linear | None) -> tuple[nn.Module, dict[str, int] | None]:
    """The module to export and the ``head`` entry of its metadata."""
    if head is None:
        return backbone, None
    return HeadedBackbone(backbone, head), {"in_features": head.in_features, "out_features": head.out_features}


class Encoder(nn.Module):
    """A pretrained backbone with its metadata: ``embed_dim``, ``preprocess`` and ``embed(images) -> (N, D)``."""

    def __init__(self, backbone: nn.Module, meta: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.meta = meta
        self.embed_dim = int(meta["embed_dim"])
        inp = meta["input"]
        self.preprocess = Preprocess(inp["channels"], (inp["height"], inp["width"]), inp["mean"], inp["std"])

    def forward(self, x: Tensor) -> Tensor:
        """Preprocessed (B, C, H, W) -> (B, embed_dim)."""
        return self.backbone(x)

    @torch.no_grad()
    def embed(self, images: Tensor | Sequence[Image.Image], batch_size: int = 256) -> Tensor:
        """Raw images (see :class:`Preprocess`) -> embeddings (N, embed_dim) float32, in eval mode."""
        was_training = self.training
        self.eval()
        device = next((p.device for p in self.backbone.parameters()), torch.device("cpu"))
        try:
            out = [
                self(self.preprocess(images[i : i + batch_size]).to(device)).float()
                for i in range(0, len(images), batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(out)


def encoder_meta(
    backbone_name: str,
    backbone_kwargs: dict[str, Any],
    embed_dim: int,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    head: dict[str, int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON that travels with an encoder: enough to rebuild it and feed it exactly as in training.

    ``head``: in/out features of a linear layer after the backbone, or None.
    """
    c, h, w = input_shape
    return {
        "format_version": FORMAT_VERSION,
        "backbone": {"name": backbone_name, "kwargs": backbone_kwargs},
        "head": head,
        "embed_dim": int(embed_dim),
        "input": {
            "channels": c,
            "height": h,
            "width": w,
            "mean": list(mean),
            "std": list(std),
            "range": "uint8 /255 then (x-mean)/std",
        },
        **extra,
        "versions": package_versions(),
    }


def save_encoder(backbone: nn.Module, path: str | Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``path`` (.safetensors) and its sibling .json; returns both paths."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(backbone, str(path), metadata={"format": "pt"})
    meta_path = path.with_suffix(".json")
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=False))
    return path, meta_path


def rebuild_backbone(meta: dict[str, Any]) -> nn.Module:
    """An untrained module of the architecture ``meta`` describes (backbone, + head if any)."""
    inp = meta["input"]
    backbone = build_backbone(
        meta["backbone"]["name"], (inp["channels"], inp["height"], inp["width"]), False, meta["backbone"]["kwargs"]
    )
    head = meta.get("head")
    if head:
        backbone = HeadedBackbone(backbone, nn.Linear(head["in_features"], head["out_features"]))
    return backbone


def load_safetensors_encoder(path: str | Path, meta: dict[str, Any]) -> nn.Module:
    """The backbone in ``path`` (.safetensors), rebuilt from ``meta``; strict key match."""
    from safetensors import safe_open

    backbone = rebuild_backbone(meta)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    except Exception as e:  # truncated or not a safetensors file
        raise UserError(f"{str(path)!r}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    expected = set(backbone.state_dict())
    missing, unexpected = sorted(expected - keys), sorted(keys - expected)
    if missing or unexpected:
        name = meta["backbone"]["name"]
        raise UserError(
            f"{str(path)!r} does not hold the weights of backbone {name!r} its metadata names: "
            f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})"
        )
    load_model(backbone, str(path), strict=True)
    return backbone


def save_run_encoder(
    run_dir: Path, recipe: Recipe, backbone: nn.Module, method: PretextMethod, data: DataBundle, metrics: dict
) -> None:
    """Write the trained encoder (with the method's export head, if any) and its metadata into the run dir."""
    exported, head = exportable(backbone, method.export_head())
    meta = encoder_meta(
        recipe.backbone.name,
        recipe.backbone.kwargs,
        int(cast(Any, exported).embed_dim),
        data.input_shape,
        data.mean,
        data.std,
        head,
        method=recipe.method.name,
        data=data.describe(),
        recipe=recipe.to_dict(),
        train_metrics=metrics,
    )
    save_encoder(exported, run_dir / "encoder.safetensors", meta)
