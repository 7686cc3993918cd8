"""What every pretext method is: an encoder plus heads and a loss, driven by the trainer through two calls.

The trainer hands a method ``num_views`` augmented, normalised views of a batch and gets back a dict with
``'loss'``; it knows no method by name. A method knows its losses and heads, never the trainer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from ssl_transfer.schema import MethodConfig, ProjectedConfig

__all__ = [
    "MethodConfig",
    "MomentumMethod",
    "ProjectedConfig",
    "PretextMethod",
    "in_fp32",
    "momentum_copy",
    "persistent_memory_bank",
]


class PretextMethod(nn.Module):
    """Base class. ``encoder`` is the backbone that gets exported; everything else is training-only."""

    config_cls: ClassVar[type[MethodConfig]]
    num_views: ClassVar[int] = 1
    supports_local_views: ClassVar[bool] = False  # multi-crop: smaller views after the num_views global ones
    needs_vit: ClassVar[bool] = False  # the backbone must be a timm ViT (masked image modelling)
    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(
        self,
        cfg: MethodConfig,
        encoder: nn.Module,
        input_shape: tuple[int, int, int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.embed_dim: int = int(encoder.embed_dim)  # type: ignore[arg-type]  # every backbone has embed_dim
        self.input_shape: tuple[int, int, int] = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        c = self.input_shape[0]
        # The pixel statistics the views were normalised with (for likelihoods in pixel units).
        self.register_buffer(
            "pixel_mean", torch.tensor(mean or [0.0] * c, dtype=torch.float32).view(1, c, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(std or [1.0] * c, dtype=torch.float32).view(1, c, 1, 1), persistent=False
        )
        self.step = 0
        self.total_steps = 1
        self.steps_per_epoch = 1
        self.joint_views = False  # set by the trainer (trainer.joint_views); see forward_views
        self.num_local_views = 0  # set by the trainer (augment.local_views) for methods that support them

    def split_views(self, views: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The step's views as (global views, local views): ``num_views`` full-size ones, then the smaller ones."""
        return list(views[: self.num_views]), list(views[self.num_views :])

    def forward_views(self, fn: Callable[[Tensor], Tensor], views: Sequence[Tensor]) -> list[Tensor]:
        """``fn`` on each view: V tensors (B, C, H, W) -> V tensors (B, ...).

        One pass per view by default (BatchNorm statistics per view, as in lightly's and solo-learn's loops;
        faster on CPUs, where a doubled batch's activations fall out of cache). With ``joint_views`` all views
        go through one pass over their concatenation (statistics shared, as in the SimCLR authors' code).
        """
        if self.joint_views:
            return list(fn(torch.cat(list(views))).chunk(len(views)))
        return [fn(v) for v in views]

    def set_progress(self, step: int, total_steps: int, steps_per_epoch: int = 1) -> None:
        """Called by the trainer before every step, for schedules (momentum, KL warm-up, teacher temperature)."""
        self.step, self.total_steps, self.steps_per_epoch = step, max(1, total_steps), max(1, steps_per_epoch)

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(1.0, self.step / self.total_steps)

    @property
    def epoch(self) -> float:
        """Epochs done so far (fractional within an epoch), for schedules given in epochs."""
        return self.step / self.steps_per_epoch

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        """``views``: ``num_views`` tensors (B, C, H, W), normalised. Returns scalars; ``'loss'`` is optimised."""
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """Hook after each optimizer step (momentum encoders update here)."""

    def before_optimizer_step(self) -> None:
        """Hook between backward and the optimizer step, gradients in place (freeze a layer early on by setting its
        gradients to None: the optimizer then skips it, weight decay included)."""

    def weight_decay(self, base: float) -> float:
        """The weight decay of this step for parameter groups whose recipe value is ``base`` (> 0); constant by
        default (DINO: a cosine schedule)."""
        return base

    def fixed_lr_modules(self) -> list[nn.Module]:
        """Modules whose learning rate the schedule leaves at its base value (none by default)."""
        return []

    def visualize(self, x: Tensor) -> dict[str, Tensor]:
        """Image grids to save, as name -> (N, C, H, W) in normalised space; none by default."""
        return {}

    def export_head(self) -> nn.Linear | None:
        """A linear map applied after the encoder in the exported model (the VAE's mean); none by default."""
        return None


class MomentumMethod(PretextMethod):
    """A method whose ``encoder_momentum`` and ``projection_head_momentum`` (frozen copies, :func:`momentum_copy`)
    follow ``encoder`` and ``projection_head`` by exponential moving average after each optimizer step, the
    momentum on a cosine schedule from ``cfg.momentum`` to 1 (BYOL, MoCo, MoCo v3, DINO)."""

    encoder_momentum: nn.Module
    projection_head_momentum: nn.Module

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        m = cosine_schedule(self.step, self.total_steps, self.cfg.momentum, 1.0)  # type: ignore[attr-defined]
        update_momentum(self.encoder, self.encoder_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)


def in_fp32(loss_fn: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
    """``loss_fn(*args, **kwargs)`` in float32 with autocast off, tensors (and lists of tensors) cast to float32:
    under bf16 autocast, similarity logits divided by a temperature, covariance sums and exp(logvar) lose too much
    precision. Tensors are the heads' outputs, e.g. (B, D), in bf16 or fp32; other arguments pass through."""

    def fp32(a: Any) -> Any:
        if isinstance(a, Tensor):
            return a.float()
        if isinstance(a, (list, tuple)):
            return [fp32(x) for x in a]
        return a

    first = next(a for a in args if isinstance(a, Tensor) or (isinstance(a, (list, tuple)) and a))
    device_type = (first if isinstance(first, Tensor) else first[0]).device.type
    with torch.autocast(device_type=device_type, enabled=False):
        return loss_fn(*(fp32(a) for a in args), **kwargs)


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` to be updated by exponential moving average (lightly's update_momentum)."""
    twin = copy.deepcopy(module)
    deactivate_requires_grad(twin)
    return twin


def persistent_memory_bank(size: int, dim: int) -> MemoryBankModule:
    """lightly's ``MemoryBankModule`` of ``size`` rows (size, dim), gathered across DDP ranks on update, with its
    buffers in ``state_dict`` (lightly keeps them out; a queue or support set must survive a resume)."""
    bank = MemoryBankModule((size, dim), gather_distributed=True, feature_dim_first=False)
    for name in ("bank", "bank_ptr"):
        bank.register_buffer(name, getattr(bank, name), persistent=True)
    return bank
