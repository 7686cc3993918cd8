"""SimCLR (Chen et al. 2020): NT-Xent between the projections of two views, other images in the batch as negatives.

Departures from the paper: projection sizes default to 512 -> 128 for small CNNs (paper: 2048 -> 128 on
ResNet-50); temperature 0.2 (paper: 0.1-0.5 depending on batch size). Negatives are gathered across
DDP ranks with gradients (lightly's NTXentLoss, gather_distributed=True).
"""

from __future__ import annotations

from typing import Annotated, Literal

from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME


class SimCLRConfig(ProjectedConfig):
    name: Literal["simclr"] = Field("simclr", description=METHOD_NAME)
    temperature: Annotated[float, Field(gt=0)] = Field(0.2, description="NT-Xent temperature")
    proj_batch_norm: bool = Field(
        True, description="BatchNorm in the projection MLP (as in the paper); off for batch-independent heads"
    )


@METHODS.register("simclr")
class SimCLR(PretextMethod):
    """Contrast two augmented views of each image against all other images in the (global) batch."""

    config_cls = SimCLRConfig
    num_views = 2
    cfg: SimCLRConfig

    def __init__(self, cfg: SimCLRConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = SimCLRProjectionHead(
            encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim, batch_norm=cfg.proj_batch_norm
        )
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=True)

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        z0, z1 = self.forward_views(lambda x: self.projection_head(self.encoder(x)), views)
        return {"loss": in_fp32(self.criterion, z0, z1)}
