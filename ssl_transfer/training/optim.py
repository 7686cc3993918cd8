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
    as in timm's ``param_groups_weight_decay``. Parameters of the modules that ``model.fixed_lr_modules()``
    returns (SimSiam's predictor, as in the paper) are in groups marked ``fixed_lr``: the scheduler leaves them at
    the base lr.
    """
    fixed = [m for m in getattr(model, "fixed_lr_modules", lambda: [])() if m is not None]
    fixed_ids = {id(p) for m in fixed for p in m.parameters()}
    params = []
    for is_fixed in (False, True):
        part = _Params([(n, p) for n, p in model.named_parameters() if (id(p) in fixed_ids) == is_fixed])
        if not any(p.requires_grad for _, p in part.named_parameters()):
            continue
        if cfg.exclude_norm_and_bias:
            groups = param_groups_weight_decay(part, cfg.weight_decay)
        else:
            groups = [{"params": [p for _, p in part.named_parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
        params += [{**g, "fixed_lr": is_fixed} for g in groups if g["params"]]
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


class _Params(nn.Module):
    """A view of some of a model's named parameters, shaped for timm's ``param_groups_weight_decay``."""

    def __init__(self, named: list[tuple[str, nn.Parameter]]) -> None:
        super().__init__()
        self._named = named

    def named_parameters(self, *args, **kwargs):  # type: ignore[override]
        return iter(self._named)


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
    """A per-step LambdaLR following :func:`lr_factor`; warm-up length is ``warmup_epochs`` × steps per epoch.
    Groups marked ``fixed_lr`` keep their base lr."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    def scheduled(s: int) -> float:
        return lr_factor(s, total_steps, warmup, cfg.schedule, cfg.min_lr_ratio)

    def constant(s: int) -> float:
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [constant if g.get("fixed_lr") else scheduled for g in optimizer.param_groups])
