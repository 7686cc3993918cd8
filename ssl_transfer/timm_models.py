"""The small CNNs registered as timm models, so that exports of them load with timm's own calls::

    import ssl_transfer  # registers cnn_tiny, cnn_small, cnn_base with timm
    timm.create_model("cnn_tiny", pretrained=True, pretrained_cfg_overlay=dict(file="model.safetensors", ...))
    timm.create_model("local-dir:path/to/export", pretrained=True)

The timm variant has timm's classifier interface (``num_classes``, ``head``, ``reset_classifier``,
``forward_head``); with ``num_classes=0`` its state dict is exactly the training backbone's.
"""

from __future__ import annotations

from typing import Any, cast

from timm.models import build_model_with_cfg, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import Tensor, nn

from ssl_transfer.backbone_names import SMALL_CNN_WIDTHS
from ssl_transfer.backbones import SmallCNN

WIDTHS = SMALL_CNN_WIDTHS


class TimmSmallCNN(SmallCNN):
    """:class:`SmallCNN` plus a linear classifier ``head`` on the pooled features (Identity when num_classes=0)."""

    def __init__(
        self, widths: tuple[int, int, int], in_chans: int = 1, num_classes: int = 0, global_pool: str = "avg", **_: Any
    ) -> None:
        super().__init__(widths, in_chans)
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool={global_pool!r}: the small CNNs average-pool")
        self.num_classes = num_classes
        self.head: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map (B, C, h, w) -> (B, num_classes), or pooled (B, C) with ``pre_logits``."""
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (1, 28, 28),
        "pool_size": (7, 7),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.5,),
        "std": (0.5,),
        "first_conv": "stages.0.0",
        "classifier": "head",
        "fixed_input_size": False,
        "license": "same as your training data",
        **kwargs,
    }


class CifarResNet(ResNet):
    """timm's ResNet with the CIFAR stem of He et al. 2016 and of the SSL CIFAR benchmarks (lightly, solo-learn):
    one 3x3 stride-1 convolution and no max-pool, so a 32 px image reaches the last stage at 4x4 (timm's ImageNet
    stem would leave 1x1). Everything else (blocks, ``group_matcher``, classifier interface) is timm's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stem: Any = self.conv1
        conv = nn.Conv2d(stem.in_channels, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.add_module("conv1", conv)
        self.add_module("maxpool", nn.Identity())
        for info in self.feature_info:  # the stem no longer reduces: every stage is 4x finer than ImageNet's
            info["reduction"] = max(1, cast(int, info["reduction"]) // 4)


def _resnet_cfg(**kwargs: Any) -> dict[str, Any]:
    return _cfg(
        input_size=(3, 32, 32),
        pool_size=(4, 4),
        first_conv="conv1",
        classifier="fc",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        **kwargs,
    )


default_cfgs = {**{name: _cfg() for name in WIDTHS}, "resnet18_cifar": _resnet_cfg(), "resnet50_cifar": _resnet_cfg()}
# (read by timm's register_model from this module)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> TimmSmallCNN:
    return build_model_with_cfg(TimmSmallCNN, variant, pretrained, widths=WIDTHS[variant], **kwargs)


@register_model
def cnn_tiny(pretrained: bool = False, **kwargs: Any) -> TimmSmallCNN:
    """Small CNN, widths 16-32-64 (embed 64), for 8-32 px inputs."""
    return _create("cnn_tiny", pretrained, **kwargs)


@register_model
def cnn_small(pretrained: bool = False, **kwargs: Any) -> TimmSmallCNN:
    """Small CNN, widths 32-64-128 (embed 128), for 8-32 px inputs."""
    return _create("cnn_small", pretrained, **kwargs)


@register_model
def cnn_base(pretrained: bool = False, **kwargs: Any) -> TimmSmallCNN:
    """Small CNN, widths 64-128-256 (embed 256), for 8-32 px inputs."""
    return _create("cnn_base", pretrained, **kwargs)


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32 px inputs (embed 512)."""
    return build_model_with_cfg(
        CifarResNet, "resnet18_cifar", pretrained, block=BasicBlock, layers=(2, 2, 2, 2), **kwargs
    )


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-50 with a 3x3 stride-1 stem and no max-pool, for 32 px inputs (embed 2048)."""
    return build_model_with_cfg(
        CifarResNet, "resnet50_cifar", pretrained, block=Bottleneck, layers=(3, 4, 6, 3), **kwargs
    )
