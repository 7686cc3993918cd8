"""Distillation (as LightlyTrain's ``distillation``): a student backbone learns to reproduce a frozen teacher's
embeddings of the same augmented images, so that a small exported model inherits a large one's representation.

The teacher is any encoder ``load_encoder`` reads (a run dir or an export in any format), or ``timm:NAME`` for a timm
model with pretrained weights from the local cache (nothing is downloaded). It sees each view as its own
preprocessing wants it: the view is mapped back to [0, 1] pixels and through the teacher's ``Preprocess`` (channel
conversion, resize, its normalisation), always in eval mode and without gradients. The student's features go
through a projection MLP to the teacher's width; the loss is ``2 - 2 cos`` between projection and teacher embedding
(MSE of the unit vectors; ``loss: mse`` for the raw embeddings). The exported encoder is the student backbone.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.errors import UserError
from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME


class DistillConfig(ProjectedConfig):
    name: Literal["distill"] = Field("distill", description=METHOD_NAME)
    teacher: str = Field(
        description="the encoder to distil: a run dir or exported encoder (load_encoder reads it), or timm:NAME for a "
        "timm model with weights in the local cache"
    )
    loss: Literal["cosine", "mse"] = Field(
        "cosine", description="cosine: 2 - 2 cos(student projection, teacher embedding); mse: on the raw embeddings"
    )


def load_teacher(spec: str) -> Any:
    """The frozen teacher ``Encoder`` (``embed_dim``, ``preprocess``, ``forward``) named by ``spec``."""
    if spec.startswith("timm:"):
        from ssl_transfer.backbones import build_backbone
        from ssl_transfer.export.encoder import Encoder

        name = spec.removeprefix("timm:")
        import timm

        cfg = timm.get_pretrained_cfg(name)
        if cfg is None:
            raise UserError(f"method.teacher={spec}: timm has no pretrained model {name!r}")
        c, h, w = cfg.input_size
        backbone = build_backbone(name, (c, h, w), pretrained=True)
        meta = {
            "embed_dim": backbone.embed_dim,
            "input": {"channels": c, "height": h, "width": w, "mean": list(cfg.mean), "std": list(cfg.std)},
        }
        teacher = Encoder(backbone, meta)
    else:
        from ssl_transfer.export import load_encoder

        teacher = load_encoder(spec)
    deactivate_requires_grad(teacher)
    return teacher.eval()


@METHODS.register("distill")
class Distill(PretextMethod):
    """Match a frozen teacher's embedding of each view with a projection of the student's features."""

    config_cls = DistillConfig
    num_views = 1
    cfg: DistillConfig

    def __init__(self, cfg: DistillConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.teacher = load_teacher(cfg.teacher)
        self.projection_head = SimCLRProjectionHead(self.embed_dim, cfg.proj_hidden_dim, self.teacher.embed_dim)

    def train(self, mode: bool = True) -> Distill:
        super().train(mode)
        self.teacher.eval()  # the teacher's BatchNorm statistics and dropout stay as trained
        return self

    @torch.no_grad()
    def teacher_embedding(self, views: Tensor) -> Tensor:
        """Normalised views (B, C, H, W) -> the teacher's embeddings (B, teacher_dim), float32."""
        x01 = (views.float() * self.pixel_std + self.pixel_mean).clamp_(0, 1)
        return self.teacher(self.teacher.preprocess(x01)).float()

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        x = views[0]
        target = self.teacher_embedding(x)
        pred = self.projection_head(self.encoder(x))
        if self.cfg.loss == "mse":
            return {"loss": in_fp32(F.mse_loss, pred, target)}
        cos = in_fp32(lambda p, t: F.cosine_similarity(p, t, dim=1).mean(), pred, target)
        return {"loss": 2 - 2 * cos}
