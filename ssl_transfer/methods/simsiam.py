"""SimSiam (Chen & He 2021): BYOL without the momentum encoder; the stop-gradient alone prevents collapse.

Departures: projection 512 -> 512 and predictor bottleneck 128 for small CNNs (paper 2048 and 512).
"""

from __future__ import annotations

from typing import Annotated, Literal

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME, PRED_HIDDEN, PROJ_OUT


class SimSiamConfig(ProjectedConfig):
    name: Literal["simsiam"] = Field("simsiam", description=METHOD_NAME)
    proj_out_dim: Annotated[int, Field(gt=0)] = Field(512, description=PROJ_OUT)
    pred_hidden_dim: Annotated[int, Field(gt=0)] = Field(
        128, description=PRED_HIDDEN + " (a bottleneck, paper: 1/4 of proj_out_dim)"
    )
    fix_predictor_lr: bool = Field(
        True, description="the predictor keeps the base lr while the rest follows the schedule (paper, sec. 4.2)"
    )
    stop_gradient: bool = Field(
        True, description="the stop-gradient on the target; false only to show the collapse it prevents"
    )


@METHODS.register("simsiam")
class SimSiam(PretextMethod):
    """Predict the other view's projection, with a stop-gradient on the target."""

    config_cls = SimSiamConfig
    num_views = 2
    cfg: SimSiamConfig

    def __init__(self, cfg: SimSiamConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = SimSiamProjectionHead(encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.prediction_head = SimSiamPredictionHead(cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim)
        self.criterion = NegativeCosineSimilarity()

    def fixed_lr_modules(self) -> list[nn.Module]:
        return [self.prediction_head] if self.cfg.fix_predictor_lr else []

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        z0, z1 = self.forward_views(lambda x: self.projection_head(self.encoder(x)), views)
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        t0, t1 = (z0.detach(), z1.detach()) if self.cfg.stop_gradient else (z0, z1)
        loss = 0.5 * (in_fp32(self.criterion, p0, t1) + in_fp32(self.criterion, p1, t0))
        # The std of the normalised projections: near 0 means collapse, near 1/sqrt(dim) is healthy.
        z_std = nn.functional.normalize(z0.detach(), dim=1).std(dim=0).mean()
        return {"loss": loss, "z_std": z_std}
