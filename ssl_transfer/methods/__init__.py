"""Pretext methods, one file each, registered by name in METHODS."""

from collections.abc import Sequence

from torch import nn

from ssl_transfer.methods import (  # noqa: F401  (each import registers its methods)
    autoencoder,
    barlowtwins,
    byol,
    moco,
    siamese,
    simclr,
    simsiam,
    vae,
    vicreg,
)
from ssl_transfer.methods.base import MethodConfig, PretextMethod
from ssl_transfer.methods.registry import METHODS

__all__ = ["METHODS", "MethodConfig", "PretextMethod", "build_method"]


def build_method(
    cfg: MethodConfig,
    encoder: nn.Module,
    input_shape: tuple[int, int, int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> PretextMethod:
    """Instantiate the method named by ``cfg.name`` around ``encoder`` for normalised inputs of ``input_shape``."""
    return METHODS.get(cfg.name)(cfg, encoder, input_shape, mean, std)
