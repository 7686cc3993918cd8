"""Backbones: small CNNs for 8-32 px inputs and any timm model, each an nn.Module mapping
images (B, C, H, W) to pooled features (B, embed_dim)."""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn

from ssl_transfer.backbone_names import CIFAR_RESNETS, SMALL_CNN_WIDTHS
from ssl_transfer.errors import UserError


class BackboneError(UserError):
    """A backbone name, option or input shape that cannot work."""


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Three stages of two 3×3 conv-BN-ReLU layers; stages 2 and 3 halve the resolution; global average pool.

    Meant for 8-32 px inputs (28 px -> 7×7 final map). ``stages`` is the ordered list of blocks
    (stem-to-head), which fine-tuning uses to freeze up to a given depth.
    """

    def __init__(self, widths: tuple[int, int, int], in_chans: int = 1) -> None:
        super().__init__()
        self.widths, self.in_chans = tuple(widths), in_chans
        w1, w2, w3 = widths
        self.stages = nn.Sequential(
            nn.Sequential(*_conv_bn_relu(in_chans, w1), *_conv_bn_relu(w1, w1)),
            nn.Sequential(*_conv_bn_relu(w1, w2, 2), *_conv_bn_relu(w2, w2)),
            nn.Sequential(*_conv_bn_relu(w2, w3, 2), *_conv_bn_relu(w3, w3)),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed_dim = w3
        self.num_features = w3  # timm's name for the same thing
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """timm's parameter grouping (``timm.models.group_parameters``): one group per stage, input to output."""
        return {"stem": r"^stages\.0\.", "blocks": r"^stages\.(\d+)\."}

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> feature map (B, embed_dim, ceil(H/4), ceil(W/4))."""
        return self.stages(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, embed_dim)."""
        return self.pool(self.forward_features(x)).flatten(1)


class TimmBackbone(nn.Module):
    """A timm model created with ``num_classes=0`` so that ``forward`` returns pooled features (B, num_features)."""

    model: Any  # a timm model: forward_features, num_features, pretrained_cfg, group_matcher

    def __init__(self, model: nn.Module, create_args: dict[str, Any] | None = None) -> None:
        """``create_args``: the keyword arguments ``timm.create_model`` was given (recorded for exports)."""
        super().__init__()
        self.model = model
        self.embed_dim = int(self.model.num_features)
        self.num_features = self.embed_dim
        self.create_args = dict(create_args or {})

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


@lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def timm_with_ours() -> Any:
    """``timm`` with our models (small CNNs, CIFAR ResNets) registered: importing ``ssl_transfer`` registers them
    when timm is first imported, but a caller that needs them imports them here, so that a failure says why."""
    import timm

    import ssl_transfer.timm_models  # noqa: F401

    return timm


def check_backbone_name(name: str) -> None:
    """Raise ValueError (listing choices) unless ``name`` is a small CNN or a timm model."""
    timm = timm_with_ours()

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, list(SMALL_CNN_WIDTHS) + list(_timm_names()), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(
        f"unknown backbone {name!r}{hint}; small CNNs: {', '.join(SMALL_CNN_WIDTHS)}, or any timm model name "
        "(timm.list_models())"
    )


def list_backbones() -> list[str]:
    """The small CNNs and the CIFAR ResNets (registered with timm); any name from ``timm.list_models()`` works too."""
    return [*SMALL_CNN_WIDTHS, *CIFAR_RESNETS]


def _create_timm(name: str, in_chans: int, image_size: int, pretrained: bool, kwargs: dict[str, Any]) -> TimmBackbone:
    timm = timm_with_ours()

    args = dict(num_classes=0, in_chans=in_chans, **kwargs)
    if "img_size" not in kwargs:
        try:  # models with a fixed token grid (ViT, Swin, ...) must be told the input size
            return TimmBackbone(
                timm.create_model(name, pretrained=pretrained, img_size=image_size, **args),
                {**args, "img_size": image_size},
            )
        except TypeError as e:
            if "img_size" not in str(e):
                raise
    return TimmBackbone(timm.create_model(name, pretrained=pretrained, **args), args)


def build_backbone(
    name: str, input_shape: tuple[int, int, int], pretrained: bool = False, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """Create backbone ``name`` for inputs of ``input_shape`` = (C, H, W) with ``timm.create_model(name,
    num_classes=0, ...)``; the result maps (B, C, H, W) to (B, embed_dim). Our small CNNs come back as they are
    (state-dict keys ``stages.*``), other timm models inside :class:`TimmBackbone` (keys ``model.*``).

    A dry forward pass on one zero image checks that the backbone accepts the shape.
    """
    kwargs = dict(kwargs or {})
    c, h, w = input_shape
    try:
        check_backbone_name(name)
    except ValueError as e:
        raise BackboneError(str(e)) from None
    if name in SMALL_CNN_WIDTHS:  # registered with timm, built by it like any timm model; no wrapper
        if kwargs or pretrained:
            raise BackboneError(f"backbone {name!r} takes no kwargs and has no pretrained weights")
        model: nn.Module = timm_with_ours().create_model(name, num_classes=0, in_chans=c)
    else:
        try:
            model = _create_timm(name, c, h, pretrained, kwargs)
        except TypeError as e:
            raise BackboneError(f"backbone.kwargs for {name!r} rejected: {e}") from None
        except (OSError, RuntimeError) as e:
            if pretrained:
                raise BackboneError(
                    f"backbone.pretrained=true: weights for {name!r} are not available offline "
                    f"({str(e).splitlines()[0]})"
                ) from None
            raise
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, c, h, w))
    except Exception as e:
        raise BackboneError(f"backbone {name!r} cannot take {c}×{h}×{w} inputs ({str(e).splitlines()[0]})") from None
    model.train(was_training)
    if out.shape != (1, model.embed_dim):
        raise BackboneError(
            f"backbone {name!r} returns {tuple(out.shape)} for one image, expected (1, {model.embed_dim})"
        )
    return model
