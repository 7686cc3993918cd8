"""VICReg (Bardes et al. 2022): invariance + variance (hinge on each dimension's std) + covariance terms.

Departures: a 3-layer projector of 1024 units for small CNNs (paper 8192). Variance and covariance are
computed over the global batch under DDP (lightly's VICRegLoss, gather_distributed=True).
"""

from __future__ import annotations

from typing import Annotated, Literal

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME, PROJ_HIDDEN, PROJ_OUT


class VICRegConfig(ProjectedConfig):
    name: Literal["vicreg"] = Field("vicreg", description=METHOD_NAME)
    proj_hidden_dim: Annotated[int, Field(gt=0)] = Field(1024, description=PROJ_HIDDEN)
    proj_out_dim: Annotated[int, Field(gt=0)] = Field(1024, description=PROJ_OUT)
    lambda_param: Annotated[float, Field(ge=0)] = Field(25.0, description="invariance weight")
    mu_param: Annotated[float, Field(ge=0)] = Field(25.0, description="variance weight")
    nu_param: Annotated[float, Field(ge=0)] = Field(1.0, description="covariance weight")
    proj_num_layers: Annotated[int, Field(ge=2)] = Field(
        3, description="layers of the projection MLP (paper 3; lightly's example 2)"
    )


@METHODS.register("vicreg")
class VICReg(PretextMethod):
    """Invariance between views, with per-dimension variance kept up and covariance pushed down."""

    config_cls = VICRegConfig
    num_views = 2
    cfg: VICRegConfig

    def __init__(self, cfg: VICRegConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = VICRegProjectionHead(
            encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim, num_layers=cfg.proj_num_layers
        )
        self.criterion = VICRegLoss(cfg.lambda_param, cfg.mu_param, cfg.nu_param, gather_distributed=True)

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        z0, z1 = self.forward_views(lambda x: self.projection_head(self.encoder(x)), views)
        return {"loss": in_fp32(self.criterion, z0, z1)}
