"""An encoder's parameters in blocks ordered from input to output, for freezing and layer-wise lr decay.

Every timm model (our small CNNs and CIFAR ResNets included) gives its ``group_matcher`` groups (timm's public
``group_parameters``); a linear head after the backbone (VAE mean) is the last block; any other module falls
back to its top-level children that hold parameters.
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from ssl_transfer.backbones import TimmBackbone


def _prefixed(blocks: list[list[str]], prefix: str) -> list[list[str]]:
    return [[f"{prefix}{n}" for n in b] for b in blocks]


def encoder_blocks(module: nn.Module) -> list[list[str]]:
    """Parameter names of ``module`` grouped into blocks, input to output; every parameter appears once."""
    from ssl_transfer.export import Encoder, HeadedBackbone

    if isinstance(module, Encoder):
        return _prefixed(encoder_blocks(module.backbone), "backbone.")
    if isinstance(module, HeadedBackbone):
        return _prefixed(encoder_blocks(module.backbone), "backbone.") + [
            [f"head.{n}" for n, _ in module.head.named_parameters()]
        ]
    if isinstance(module, TimmBackbone):
        return _prefixed(encoder_blocks(module.model), "model.")
    if hasattr(module, "group_matcher"):
        from timm.models import group_parameters

        groups = group_parameters(module, cast(Any, module).group_matcher(coarse=True))
        return [list(groups[k]) for k in sorted(groups) if groups[k]]
    blocks = [[f"{name}.{n}" for n, _ in child.named_parameters()] for name, child in module.named_children()]
    blocks = [b for b in blocks if b]
    if not blocks:
        raise ValueError(f"{type(module).__name__} has no parameters to group")
    return blocks
