"""NNCLR (Dwibedi et al. 2021): contrast each view's prediction with the nearest neighbour of the other view's
projection in a support set of past projections.

The support set is lightly's ``MemoryBankModule`` (as in its ``NNMemoryBankModule``) with persistent buffers, so it is
saved in checkpoints and restored on resume like MoCo's queue, and gathered across DDP ranks on update. Both views
look up neighbours in the same support-set state; the step's first-view projections (of every rank) are added after
both lookups. The loss is lightly's ``NTXentLoss`` (negatives gathered across ranks), symmetric as in lightly's
example. Departures: sizes 512 -> 128 and a 4096-entry support set for small data (paper: 2048 -> 256, 98,304).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import NNCLRPredictionHead, NNCLRProjectionHead
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32, persistent_memory_bank
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME, PRED_HIDDEN


class NNCLRConfig(ProjectedConfig):
    name: Literal["nnclr"] = Field("nnclr", description=METHOD_NAME)
    pred_hidden_dim: Annotated[int, Field(gt=0)] = Field(512, description=PRED_HIDDEN)
    temperature: Annotated[float, Field(gt=0)] = Field(0.1, description="NT-Xent temperature (paper: 0.1)")
    support_size: Annotated[int, Field(gt=0)] = Field(
        4096, description="projections kept in the support set (oldest replaced first; paper: 98,304)"
    )


def nearest_neighbours(z: Tensor, support: Tensor) -> Tensor:
    """For each row of ``z`` (B, D) the row of ``support`` (K, D) with the highest cosine similarity: (B, D)."""
    sim = F.normalize(z, dim=1) @ F.normalize(support, dim=1).T
    return support[sim.argmax(dim=1)]


@METHODS.register("nnclr")
class NNCLR(PretextMethod):
    """NT-Xent between one view's prediction and the support-set neighbour of the other view's projection."""

    config_cls = NNCLRConfig
    num_views = 2
    cfg: NNCLRConfig

    def __init__(self, cfg: NNCLRConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = NNCLRProjectionHead(encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.prediction_head = NNCLRPredictionHead(cfg.proj_out_dim, cfg.pred_hidden_dim, cfg.proj_out_dim)
        self.support_set = persistent_memory_bank(cfg.support_size, cfg.proj_out_dim)
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=True)

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        z0, z1 = self.forward_views(lambda x: self.projection_head(self.encoder(x)), views)
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        support = self.support_set.bank.detach().clone()  # the update below writes in place
        n0, n1 = (in_fp32(nearest_neighbours, z.detach(), support) for z in (z0, z1))
        loss = 0.5 * (in_fp32(self.criterion, n0, p1) + in_fp32(self.criterion, n1, p0))
        if self.training:
            with torch.no_grad():
                self.support_set(z0.detach().float(), update=True)
        return {"loss": loss}
