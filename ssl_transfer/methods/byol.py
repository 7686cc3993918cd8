"""BYOL (Grill et al. 2020): an online network predicts a momentum target network's projection of the other view.

Departures: projection/prediction sizes 1024 -> 128 for small CNNs (paper 4096 -> 256); the target momentum
follows a cosine schedule from ``momentum`` (0.99; paper 0.996) to 1, as in the paper.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import MomentumMethod, ProjectedConfig, in_fp32, momentum_copy
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME, PRED_HIDDEN, PROJ_HIDDEN


class BYOLConfig(ProjectedConfig):
    name: Literal["byol"] = Field("byol", description=METHOD_NAME)
    proj_hidden_dim: Annotated[int, Field(gt=0)] = Field(1024, description=PROJ_HIDDEN)
    pred_hidden_dim: Annotated[int, Field(gt=0)] = Field(1024, description=PRED_HIDDEN)
    momentum: Annotated[float, Field(ge=0, le=1)] = Field(
        0.99, description="start of the cosine momentum schedule to 1.0"
    )


@METHODS.register("byol")
class BYOL(MomentumMethod):
    """Predict the momentum target's projection of the other view; no negatives."""

    config_cls = BYOLConfig
    num_views = 2
    cfg: BYOLConfig

    def __init__(self, cfg: BYOLConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = BYOLProjectionHead(encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.prediction_head = BYOLPredictionHead(cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim)
        self.encoder_momentum = momentum_copy(self.encoder)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        p0, p1 = self.forward_views(lambda x: self.prediction_head(self.projection_head(self.encoder(x))), views)
        with torch.no_grad():
            z0, z1 = self.forward_views(lambda x: self.projection_head_momentum(self.encoder_momentum(x)), views)
        return {"loss": 0.5 * (in_fp32(self.criterion, p0, z1) + in_fp32(self.criterion, p1, z0))}
