"""MoCo v3 (Chen, Xie & He 2021): a query encoder with a predictor against a momentum key encoder, no queue.

Each view's prediction is contrasted with the other view's momentum key over the global batch (keys gathered across
DDP ranks), InfoNCE scaled by ``2 * temperature`` and summed over the two directions, as in the authors' code. All MLP
layers have BatchNorm (lightly's ``MoCoProjectionHead`` with ``batch_norm=True``, 3 layers; the predictor is 2
layers). Departures: sizes 1024 -> 256 for small CNNs (paper 4096 -> 256); the momentum follows a cosine schedule
from ``momentum`` (paper: 0.99 for ViT, 0.996 for ResNet) to 1.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.utils import dist
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import MomentumMethod, ProjectedConfig, in_fp32, momentum_copy
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME, PRED_HIDDEN, PROJ_HIDDEN


class MoCoV3Config(ProjectedConfig):
    name: Literal["mocov3"] = Field("mocov3", description=METHOD_NAME)
    proj_hidden_dim: Annotated[int, Field(gt=0)] = Field(1024, description=PROJ_HIDDEN)
    proj_out_dim: Annotated[int, Field(gt=0)] = Field(256, description="output width of the projection MLP")
    pred_hidden_dim: Annotated[int, Field(gt=0)] = Field(1024, description=PRED_HIDDEN)
    temperature: Annotated[float, Field(gt=0)] = Field(0.2, description="InfoNCE temperature (paper: 0.2)")
    momentum: Annotated[float, Field(ge=0, le=1)] = Field(
        0.99, description="start of the cosine momentum schedule to 1.0 (paper: 0.99 ViT, 0.996 ResNet)"
    )


def mocov3_infonce(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """MoCo v3's contrastive loss: queries (B, D) against the keys (B, D) of every rank (no gradient to keys); the
    positive of query i is key i of this rank. ``2 * temperature`` times the cross-entropy, as in the authors' code."""
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    keys = torch.cat(dist.gather(k)) if dist.world_size() > 1 else k
    labels = torch.arange(len(q), device=q.device) + dist.rank() * len(q)
    return 2 * temperature * F.cross_entropy(q @ keys.T / temperature, labels)


@METHODS.register("mocov3")
class MoCoV3(MomentumMethod):
    """Predict the other view's momentum key among the keys of the whole batch."""

    config_cls = MoCoV3Config
    num_views = 2
    cfg: MoCoV3Config

    def __init__(self, cfg: MoCoV3Config, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = MoCoProjectionHead(
            encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim, num_layers=3, batch_norm=True
        )
        self.prediction_head = MoCoProjectionHead(
            cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim, num_layers=2, batch_norm=True
        )
        self.encoder_momentum = momentum_copy(self.encoder)
        self.projection_head_momentum = momentum_copy(self.projection_head)

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        q0, q1 = self.forward_views(lambda x: self.prediction_head(self.projection_head(self.encoder(x))), views)
        with torch.no_grad():
            k0, k1 = self.forward_views(lambda x: self.projection_head_momentum(self.encoder_momentum(x)), views)
        t = self.cfg.temperature
        return {"loss": in_fp32(mocov3_infonce, q0, k1, t) + in_fp32(mocov3_infonce, q1, k0, t)}
