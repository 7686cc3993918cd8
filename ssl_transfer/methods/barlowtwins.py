"""Barlow Twins (Zbontar et al. 2021): push the cross-correlation of the two views' projections to identity.

Departures: projection 1024 -> 1024 for small CNNs (paper 8192 -> 8192). The cross-correlation is computed
over the global batch under DDP (lightly's BarlowTwinsLoss, gather_distributed=True).
"""

from __future__ import annotations

from typing import Annotated, Literal

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, forward_views
from ssl_transfer.methods.registry import METHODS


class BarlowTwinsConfig(ProjectedConfig):
    name: Literal["barlowtwins"] = "barlowtwins"
    proj_hidden_dim: Annotated[int, Field(gt=0)] = 1024
    proj_out_dim: Annotated[int, Field(gt=0)] = 1024
    lambda_param: Annotated[float, Field(gt=0)] = Field(0.005, description="weight of the off-diagonal (redundancy) term")


@METHODS.register("barlowtwins")
class BarlowTwins(PretextMethod):
    """Make the views' cross-correlation matrix the identity: invariance plus decorrelated features."""

    config_cls = BarlowTwinsConfig
    num_views = 2
    cfg: BarlowTwinsConfig

    def __init__(self, cfg: BarlowTwinsConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = BarlowTwinsProjectionHead(encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=cfg.lambda_param, gather_distributed=True)

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        z0, z1 = forward_views(lambda x: self.projection_head(self.encoder(x)), views)
        return {"loss": self.criterion(z0, z1)}
