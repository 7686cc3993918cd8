"""DINO (Caron et al. 2021): a student matches a momentum teacher's centred, sharpened distribution over
``output_dim`` outputs, across views; the teacher sees the global views only, the student every view (multi-crop).

Built on lightly's ``DINOProjectionHead`` (3-layer MLP, L2-normalised bottleneck, weight-normalised last layer) and
``DINOLoss`` (centre kept as a buffer, so it is in checkpoints; its update averages over DDP ranks). As in the paper:
teacher temperature warmed up linearly per epoch, teacher momentum on a cosine schedule to 1, the last layer's
gradients dropped during the first ``freeze_last_layer_epochs`` epochs (before the optimizer step, so weight decay
skips it too), and an optional cosine weight-decay schedule from the recipe's ``optim.weight_decay`` to
``weight_decay_end``. The exported encoder is the student's backbone. Departures for small CNNs: head 512 -> 128 ->
2048 (paper 2048 -> 256 -> 65536).
"""

from __future__ import annotations

import warnings
from typing import Annotated, Literal

import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead
from lightly.utils.scheduler import cosine_schedule
from pydantic import Field
from torch import Tensor, nn

from ssl_transfer.methods.base import MomentumMethod, ProjectedConfig, in_fp32, momentum_copy
from ssl_transfer.methods.registry import METHODS
from ssl_transfer.schema import METHOD_NAME

Temp = Annotated[float, Field(gt=0)]


class DINOConfig(ProjectedConfig):
    name: Literal["dino"] = Field("dino", description=METHOD_NAME)
    bottleneck_dim: Annotated[int, Field(gt=0)] = Field(128, description="width of the L2-normalised bottleneck")
    output_dim: Annotated[int, Field(gt=0)] = Field(2048, description="outputs of the last layer (paper: 65536)")
    head_batch_norm: bool = Field(False, description="BatchNorm in the head MLP (paper: off for ViTs, on for ResNets)")
    norm_last_layer: bool = Field(True, description="fix the weight-normalised last layer's norm (more stable)")
    teacher_temp: Temp = Field(0.04, description="teacher temperature after its warm-up (paper: 0.04-0.07)")
    warmup_teacher_temp: Temp = Field(0.04, description="teacher temperature at the start of its warm-up")
    teacher_temp_warmup_epochs: Annotated[int, Field(ge=0)] = Field(
        0, description="epochs of the linear teacher-temperature warm-up (paper: 30 when teacher_temp is 0.07)"
    )
    student_temp: Temp = Field(0.1, description="student temperature")
    center_momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="momentum of the teacher centre")
    momentum: Annotated[float, Field(ge=0, le=1)] = Field(
        0.996, description="start of the cosine teacher-momentum schedule to 1.0"
    )
    freeze_last_layer_epochs: Annotated[int, Field(ge=0)] = Field(
        1, description="epochs during which the last layer is not updated"
    )
    weight_decay_end: Annotated[float, Field(ge=0)] | None = Field(
        None, description="weight decay at the end of a cosine schedule from optim.weight_decay (paper: 0.04 -> 0.4)"
    )


def dino_head(embed_dim: int, cfg: DINOConfig) -> DINOProjectionHead:
    """lightly's DINO head for an encoder of ``embed_dim`` features: (B, embed_dim) -> (B, output_dim). Its
    weight-normalised last layer is rebuilt with torch's parametrization (lightly uses the deprecated
    ``nn.utils.weight_norm``, whose module cannot be deep-copied after a forward pass), same function and init:
    unit norm, fixed when ``norm_last_layer``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        head = DINOProjectionHead(
            embed_dim, cfg.proj_hidden_dim, cfg.bottleneck_dim, cfg.output_dim, batch_norm=cfg.head_batch_norm
        )
    last = nn.utils.parametrizations.weight_norm(nn.Linear(cfg.bottleneck_dim, cfg.output_dim, bias=False))
    norm = last.parametrizations.weight.original0
    norm.data.fill_(1)
    norm.requires_grad = not cfg.norm_last_layer
    head.last_layer = last
    return head


@METHODS.register("dino")
class DINO(MomentumMethod):
    """Self-distillation with no labels: the student predicts the teacher's distribution of the other views."""

    config_cls = DINOConfig
    num_views = 2
    supports_local_views = True
    cfg: DINOConfig

    def __init__(self, cfg: DINOConfig, encoder: nn.Module, *args, **kwargs) -> None:
        super().__init__(cfg, encoder, *args, **kwargs)
        self.projection_head = dino_head(self.embed_dim, cfg)
        self.encoder_momentum = momentum_copy(self.encoder)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = DINOLoss(
            output_dim=cfg.output_dim, student_temp=cfg.student_temp, center_momentum=cfg.center_momentum
        )

    def teacher_temp(self) -> float:
        """The teacher temperature of this epoch: linear warm-up per epoch, then constant."""
        c, e = self.cfg, int(self.epoch)
        if e >= c.teacher_temp_warmup_epochs:
            return c.teacher_temp
        return c.warmup_teacher_temp + (c.teacher_temp - c.warmup_teacher_temp) * e / c.teacher_temp_warmup_epochs

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        global_views, local_views = self.split_views(views)
        with torch.no_grad():
            teacher = self.forward_views(
                lambda x: self.projection_head_momentum(self.encoder_momentum(x)), global_views
            )

        def student(x: Tensor) -> Tensor:
            return self.projection_head(self.encoder(x))

        students = self.forward_views(student, global_views) + self.forward_views(student, local_views)
        return {"loss": in_fp32(self.criterion, teacher, students, teacher_temp=self.teacher_temp())}

    def before_optimizer_step(self) -> None:
        if self.epoch < self.cfg.freeze_last_layer_epochs:
            for p in self.projection_head.last_layer.parameters():
                p.grad = None

    def weight_decay(self, base: float) -> float:
        if self.cfg.weight_decay_end is None:
            return base
        return cosine_schedule(self.step, self.total_steps, base, self.cfg.weight_decay_end)
