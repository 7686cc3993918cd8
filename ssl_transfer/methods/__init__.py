"""Pretext methods, one file each, registered by name in METHODS: every module of this package is imported
here, so a new method is one file (plus its recipes)."""

import importlib
import pkgutil
from collections.abc import Sequence

from torch import nn

from ssl_transfer.methods.base import MethodConfig, PretextMethod
from ssl_transfer.methods.registry import METHODS

__all__ = ["METHODS", "MethodConfig", "PretextMethod", "build_method"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # each method module registers its methods


def build_method(
    cfg: MethodConfig,
    encoder: nn.Module,
    input_shape: tuple[int, int, int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> PretextMethod:
    """Instantiate the method named by ``cfg.name`` around ``encoder`` for normalised inputs of ``input_shape``."""
    return METHODS.get(cfg.name)(cfg, encoder, input_shape, mean, std)
