"""SwAV (Caron et al. 2020): swapped prediction of online cluster assignments. Each global view's prototype
scores give soft codes by Sinkhorn-Knopp (equal-partition constraint over the global batch); every other view,
local views included (multi-crop), predicts them.

Built on lightly's ``SwaVProjectionHead``, ``SwaVPrototypes`` (re-normalised to the unit sphere before each step)
and ``SwaVLoss`` (its Sinkhorn sums over DDP ranks, so the codes are those of the global batch). Optional queue of
past global-view projections (one per global view, lightly ``MemoryBankModule``s with persistent buffers, gathered
across ranks) that joins the Sinkhorn from ``queue_start_epochs`` on, as in the paper for small batches. The
prototypes' gradients are dropped during the first ``freeze_prototypes_epochs`` epochs (paper: the first epoch).
Departures for small CNNs: projection 512 -> 128 and 512 prototypes (paper 2048 -> 128, 3000).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules.heads import SwaVProjectionHead, SwaVPrototypes
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32, persistent_memory_bank
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME


class SwAVConfig(ProjectedConfig):
    name: Literal["swav"] = Field("swav", description=METHOD_NAME)
    n_prototypes: Annotated[int, Field(gt=1)] = Field(512, description="number of prototypes (paper: 3000)")
    temperature: Annotated[float, Field(gt=0)] = Field(0.1, description="temperature of the swapped prediction")
    sinkhorn_iterations: Annotated[int, Field(ge=1)] = Field(3, description="Sinkhorn-Knopp iterations")
    sinkhorn_epsilon: Annotated[float, Field(gt=0)] = Field(0.05, description="Sinkhorn-Knopp entropy weight")
    freeze_prototypes_epochs: Annotated[float, Field(ge=0)] = Field(
        1, description="epochs during which the prototypes are not updated"
    )
    queue_size: Annotated[int, Field(ge=0)] = Field(
        0, description="past projections per global view joining the Sinkhorn (0 = no queue; paper: 3840)"
    )
    queue_start_epochs: Annotated[float, Field(ge=0)] = Field(
        1, description="epochs before the queue joins the Sinkhorn (it fills from the start)"
    )


@METHODS.register("swav")
class SwAV(PretextMethod):
    """Predict the Sinkhorn codes of one view's prototype scores from the other views."""

    config_cls = SwAVConfig
    num_views = 2
    supports_local_views = True
    cfg: SwAVConfig

    def __init__(self, cfg: SwAVConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = SwaVProjectionHead(self.embed_dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
        self.prototypes = SwaVPrototypes(cfg.proj_out_dim, cfg.n_prototypes)
        self.criterion = SwaVLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            sinkhorn_epsilon=cfg.sinkhorn_epsilon,
            sinkhorn_gather_distributed=True,
        )
        self.queues = nn.ModuleList(
            [persistent_memory_bank(cfg.queue_size, cfg.proj_out_dim) for _ in range(self.num_views)]
            if cfg.queue_size
            else []
        )

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            self.prototypes.normalize()
        global_views, local_views = self.split_views(views)

        def project(x: Tensor) -> Tensor:
            return F.normalize(self.projection_head(self.encoder(x)), dim=1)

        z_global, z_local = self.forward_views(project, global_views), self.forward_views(project, local_views)
        queue_scores = None
        if self.queues and self.epoch >= self.cfg.queue_start_epochs:
            with torch.no_grad():
                queue_scores = [self.prototypes(q.bank.detach().clone()) for q in self.queues]  # type: ignore[operator]
        loss = in_fp32(
            self.criterion,
            [self.prototypes(z) for z in z_global],
            [self.prototypes(z) for z in z_local],
            queue_scores,
        )
        if self.training:
            with torch.no_grad():
                for q, z in zip(self.queues, z_global):
                    q(z.detach().float(), update=True)
        return {"loss": loss.squeeze()}

    def before_optimizer_step(self) -> None:
        if self.epoch < self.cfg.freeze_prototypes_epochs:
            for p in self.prototypes.parameters():
                p.grad = None
