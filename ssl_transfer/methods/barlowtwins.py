"""Barlow Twins (Zbontar et al. 2021): push the cross-correlation of the two views' projections to identity.

Departures: projection 1024 -> 1024 for small CNNs (paper 8192 -> 8192).

Under DDP the projections are gathered (with gradients) and lightly's loss is applied to the global batch.
lightly's own ``gather_distributed=True`` standardises each rank's batch with that rank's statistics before
summing the correlation matrices, which differs from the global-batch loss (tests/methods/test_ddp.py shows
10.79 vs 11.47 on 2 ranks); the paper's code standardises over the global batch (SyncBatchNorm).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead
from lightly.utils import dist
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME, PROJ_HIDDEN, PROJ_OUT


class GlobalBarlowTwinsLoss(nn.Module):
    """lightly's BarlowTwinsLoss on projections gathered from every rank: (B, D) x 2 -> scalar, the global-batch
    loss."""

    def __init__(self, lambda_param: float) -> None:
        super().__init__()
        self.loss = BarlowTwinsLoss(lambda_param=lambda_param, gather_distributed=False)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        if dist.world_size() > 1:
            z_a, z_b = torch.cat(dist.gather(z_a), 0), torch.cat(dist.gather(z_b), 0)
        return self.loss(z_a, z_b)


class BarlowTwinsConfig(ProjectedConfig):
    name: Literal["barlowtwins"] = Field("barlowtwins", description=METHOD_NAME)
    proj_hidden_dim: Annotated[int, Field(gt=0)] = Field(1024, description=PROJ_HIDDEN)
    proj_out_dim: Annotated[int, Field(gt=0)] = Field(1024, description=PROJ_OUT)
    lambda_param: Annotated[float, Field(gt=0)] = Field(
        0.005, description="weight of the off-diagonal (redundancy) term"
    )


@METHODS.register("barlowtwins")
class BarlowTwins(PretextMethod):
    """Make the views' cross-correlation matrix the identity: invariance plus decorrelated features."""

    config_cls = BarlowTwinsConfig
    num_views = 2
    cfg: BarlowTwinsConfig

    def __init__(self, cfg: BarlowTwinsConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = BarlowTwinsProjectionHead(encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.criterion = GlobalBarlowTwinsLoss(cfg.lambda_param)

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        z0, z1 = self.forward_views(lambda x: self.projection_head(self.encoder(x)), views)
        return {"loss": in_fp32(self.criterion, z0, z1)}
