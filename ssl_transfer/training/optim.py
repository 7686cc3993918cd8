"""Optimizers and the per-step learning-rate schedule (linear warm-up, then cosine or constant)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from lightly.utils.lars import LARS
from timm.optim import param_groups_weight_decay
from torch import nn

if TYPE_CHECKING:
    from ssl_transfer.recipe import OptimConfig


def scaled_lr(cfg: "OptimConfig", global_batch: int | None) -> float:
    """``cfg.lr``, times ``global_batch / cfg.lr_batch_size`` when the recipe gives the batch its lr is for
    (the linear scaling rule of Goyal et al. 2017, as lightly's and the papers' CIFAR/ImageNet settings)."""
    if cfg.lr_batch_size is None or global_batch is None:
        return cfg.lr
    return cfg.lr * global_batch / cfg.lr_batch_size


def build_optimizer(model: nn.Module, cfg: "OptimConfig", global_batch: int | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model``'s trainable parameters, at :func:`scaled_lr` for ``global_batch``.

    With ``exclude_norm_and_bias`` (default) biases and 1-d parameters (norm scales) get no weight decay,
    as in timm's ``param_groups_weight_decay``.
    """
    if cfg.exclude_norm_and_bias:
        params = param_groups_weight_decay(model, cfg.weight_decay)
    else:
        params = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    lr = scaled_lr(cfg, global_batch)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=cfg.betas)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=cfg.betas)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
    if cfg.optimizer == "lars":
        return LARS(params, lr=lr, momentum=cfg.momentum)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")  # unreachable: the schema restricts the names


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: "OptimConfig", total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following :func:`lr_factor`; warm-up length is ``warmup_epochs`` × steps per epoch."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, cfg.schedule, cfg.min_lr_ratio)
    )
