"""MoCo v2 (He et al. 2020; Chen et al. 2020b): a query encoder, a momentum key encoder and a queue of keys.

The queue is lightly's memory bank inside NTXentLoss, re-registered as a persistent buffer so that it is
saved in checkpoints and restored on resume. The loss is symmetrised over the two views by default (as in
lightly's MoCo examples; the paper uses one direction). Departures: momentum 0.99 and queue 4096 suit short
runs on small data (paper: 0.999 and 65536); no shuffle-BN (the batch is not split across ranks for BN).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32, momentum_copy
from ssl_transfer.methods.registry import METHODS


class MoCoConfig(ProjectedConfig):
    name: Literal["moco"] = "moco"
    temperature: Annotated[float, Field(gt=0)] = 0.2
    queue_size: Annotated[int, Field(gt=0)] = 4096
    momentum: Annotated[float, Field(ge=0, le=1)] = Field(0.99, description="start of the cosine momentum schedule to 1.0")
    symmetric: bool = True


@METHODS.register("moco")
class MoCo(PretextMethod):
    """Match each query to its momentum-encoded key against a queue of past keys."""

    config_cls = MoCoConfig
    num_views = 2
    cfg: MoCoConfig

    def __init__(self, cfg: MoCoConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = MoCoProjectionHead(encoder.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.encoder_momentum = momentum_copy(self.encoder)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NTXentLoss(temperature=cfg.temperature, memory_bank_size=(cfg.queue_size, cfg.proj_out_dim), gather_distributed=True)
        bank = self.criterion.memory_bank
        for name in ("bank", "bank_ptr"):  # lightly keeps the queue out of state_dict; checkpoints need it
            bank.register_buffer(name, getattr(bank, name), persistent=True)

    @property
    def queue(self) -> Tensor:
        """The key queue, (queue_size, proj_out_dim), unit rows."""
        return self.criterion.memory_bank.bank

    def query(self, x: Tensor) -> Tensor:
        return self.projection_head(self.encoder(x))

    @torch.no_grad()
    def key(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.encoder_momentum(x))

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        x0, x1 = views
        loss = in_fp32(self.criterion, self.query(x0), self.key(x1))
        if self.cfg.symmetric:
            loss = 0.5 * (loss + in_fp32(self.criterion, self.query(x1), self.key(x0)))
        return {"loss": loss}

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        m = cosine_schedule(self.step, self.total_steps, self.cfg.momentum, 1.0)
        update_momentum(self.encoder, self.encoder_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)
