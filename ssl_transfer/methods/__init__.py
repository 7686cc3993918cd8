"""Pretext methods, one file each, registered by name in METHODS."""

from ssl_transfer.methods import autoencoder  # noqa: F401  (registers ae, dae)
from ssl_transfer.methods.base import MethodConfig, PretextMethod
from ssl_transfer.methods.registry import METHODS

__all__ = ["METHODS", "MethodConfig", "PretextMethod", "build_method"]


def build_method(cfg: MethodConfig, encoder, input_shape: tuple[int, int, int]) -> PretextMethod:
    """Instantiate the method named by ``cfg.name`` around ``encoder``."""
    return METHODS.get(cfg.name)(cfg, encoder, input_shape)
