"""Distillation (as LightlyTrain's ``distillation``): a student backbone learns to reproduce a frozen teacher's
embeddings of the same augmented images, so that a small exported model inherits a large one's representation.

The teacher is any encoder ``load_encoder`` reads (a run dir or an export in any format), or ``timm:NAME`` for a timm
model with pretrained weights from the local cache (nothing is downloaded). It sees each view as its own
preprocessing wants it: the view is mapped back to [0, 1] pixels and through the teacher's ``Preprocess`` (channel
conversion, resize, its normalisation), always in eval mode and without gradients. The student's features go
through a projection to the teacher's width (``head``: one linear layer as LightlyTrain, or SimCLR's MLP). Losses
(``loss``):

- ``similarity`` (default; LightlyTrain's distillation v1): each embedding's softmax over its cosine similarities
  to a queue of past teacher embeddings (``queue_size``, ``temperature``); KL divergence from the teacher's to the
  student's distribution. Shift-invariant per row, so the teacher's mean direction (pooled post-ReLU features are
  all positive) does not dominate the target as it does for a plain cosine.
- ``cosine``: ``2 - 2 cos`` between projection and teacher embedding; ``mse``: on the raw embeddings.

``mixup`` blends each batch with a shuffled copy of itself before both networks see it (as LightlyTrain). The
exported encoder is the student backbone.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.errors import UserError
from ssl_transfer.methods.base import PretextMethod, ProjectedConfig, in_fp32, persistent_memory_bank
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME


class DistillConfig(ProjectedConfig):
    name: Literal["distill"] = Field("distill", description=METHOD_NAME)
    teacher: str = Field(
        description="the encoder to distil: a run dir or exported encoder (load_encoder reads it), or timm:NAME for a "
        "timm model with weights in the local cache"
    )
    loss: Literal["similarity", "cosine", "mse"] = Field(
        "similarity",
        description="similarity: KL between the teacher's and the student's softmax over cosine similarities to a "
        "queue of teacher embeddings (LightlyTrain's distillation); cosine: 2 - 2 cos(student projection, teacher "
        "embedding); mse: on the raw embeddings",
    )
    queue_size: Annotated[int, Field(gt=0)] = Field(
        8192,
        description="similarity loss: teacher embeddings kept in the queue, oldest replaced first (LightlyTrain scales "
        "it with the data: 1024 at 4k images, 4096 at 20k, 8192 beyond)",
    )
    temperature: Annotated[float, Field(gt=0)] = Field(
        0.07, description="similarity loss: softmax temperature of both distributions"
    )
    head: Literal["linear", "mlp"] = Field(
        "linear",
        description="the student's projection to the teacher's width: linear (LightlyTrain; the student's features "
        "must then carry the teacher's relations themselves) or mlp (SimCLR's projection head)",
    )
    mixup: bool = Field(
        False,
        description="blend each batch with a shuffled copy of itself, one weight ~ U(0, 1) (LightlyTrain does; on the "
        "CIFAR-10 subset it cost 2.6 points of kNN, see benchmarks/PROBES.md)",
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
        self.projection_head: nn.Module = (
            nn.Linear(self.embed_dim, self.teacher.embed_dim)
            if cfg.head == "linear"
            else SimCLRProjectionHead(self.embed_dim, cfg.proj_hidden_dim, self.teacher.embed_dim)
        )
        if cfg.loss == "similarity":
            self.queue = persistent_memory_bank(cfg.queue_size, self.teacher.embed_dim)

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
        x = mixup(views[0]) if self.cfg.mixup and self.training else views[0]
        target = self.teacher_embedding(x)
        pred = self.projection_head(self.encoder(x))
        if self.cfg.loss == "mse":
            return {"loss": in_fp32(F.mse_loss, pred, target)}
        if self.cfg.loss == "cosine":
            cos = in_fp32(lambda p, t: F.cosine_similarity(p, t, dim=1).mean(), pred, target)
            return {"loss": 2 - 2 * cos}
        t = F.normalize(target, dim=1)
        _, past = self.queue(t, update=self.training)  # lightly returns a copy of the queue from before the update
        keys = torch.cat([t, past])
        return {"loss": in_fp32(similarity_kl, pred, t, keys, self.cfg.temperature)}


def mixup(x: Tensor) -> Tensor:
    """``x`` (B, ...) blended with a random permutation of its rows, one weight ~ U(0, 1) for the batch."""
    lam = float(torch.rand(()))
    return lam * x + (1 - lam) * x[torch.randperm(x.shape[0], device=x.device)]


def similarity_kl(pred: Tensor, target: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of softmax distributions over cosine similarities to ``keys`` (K, D); ``pred`` and
    ``target`` (B, D), ``target`` and ``keys`` unit vectors. Scalar, mean over the batch."""
    log_p_student = F.log_softmax(F.normalize(pred, dim=1) @ keys.T / temperature, dim=1)
    log_p_teacher = F.log_softmax(target @ keys.T / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
