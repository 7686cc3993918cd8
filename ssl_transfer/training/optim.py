"""Optimizers and the per-step learning-rate schedule (linear warm-up, then cosine or constant) shared by
pretraining and fine-tuning."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from lightly.utils.scheduler import cosine_warmup_schedule
from timm.optim import param_groups_weight_decay
from torch import nn

if TYPE_CHECKING:
    from ssl_transfer.recipe import OptimConfig

log = logging.getLogger("ssl_transfer")


def scaled_lr(cfg: OptimConfig, global_batch: int | None) -> float:
    """``cfg.lr``, times ``global_batch / cfg.lr_batch_size`` when the recipe gives the batch its lr is for
    (the linear scaling rule of Goyal et al. 2017, as lightly's and the papers' CIFAR/ImageNet settings)."""
    if cfg.lr_batch_size is None or global_batch is None:
        return cfg.lr
    return cfg.lr * global_batch / cfg.lr_batch_size


def build_optimizer(model: nn.Module, cfg: OptimConfig, global_batch: int | None = None) -> torch.optim.Optimizer:
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
            groups = [
                {"params": [p for _, p in part.named_parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}
            ]
        params += [{**g, "fixed_lr": is_fixed} for g in groups if g["params"]]
    lr = scaled_lr(cfg, global_batch)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=cfg.betas)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=cfg.betas)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
    if cfg.optimizer == "lars":
        from lightly.utils.lars import LARS

        return LARS(params, lr=lr, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")  # unreachable: the schema restricts the names


class _Params(nn.Module):
    """A view of some of a model's named parameters, shaped for timm's ``param_groups_weight_decay``."""

    def __init__(self, named: list[tuple[str, nn.Parameter]]) -> None:
        super().__init__()
        self._named = named

    def named_parameters(self, *args, **kwargs):  # type: ignore[override]
        return iter(self._named)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based): lightly's ``cosine_warmup_schedule`` (the
    schedule of lightly's benchmarks): linear warm-up from 1/warmup_steps to 1, then a cosine down to
    ``min_lr_ratio`` at the last step, or 1 throughout for ``schedule="constant"``."""
    if schedule == "constant":
        return (step + 1) / warmup_steps if step < warmup_steps else 1.0
    return float(cosine_warmup_schedule(step, max(1, total_steps), 1.0, min_lr_ratio, warmup_steps, 0.0))


def warmup_steps(
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_fraction: float | None = None,
    what: str = "optim",
) -> int:
    """Warm-up length in optimizer steps for a run of ``total_steps``: ``warmup_fraction`` of the run when given,
    else ``warmup_epochs`` x ``steps_per_epoch``.

    The schedule follows the run: a warm-up that covers half of the run or more logs one warning line (naming the
    setting, the run length and what to set instead); one as long as the run or longer, where the lr would
    never reach its peak and the decay never start, is cut to half of the run (the warning says so).
    """
    total_steps = max(1, total_steps)
    if warmup_fraction is not None:
        warm, asked = int(round(warmup_fraction * total_steps)), f"{what}.warmup_fraction={warmup_fraction:g}"
    else:
        warm, asked = int(round(warmup_epochs * steps_per_epoch)), f"{what}.warmup_epochs={warmup_epochs:g}"
    if warm * 2 < total_steps:
        return warm
    epochs = total_steps / max(1, steps_per_epoch)
    share = f"{warm} of the run's {total_steps} steps ({epochs:.3g} epochs)"
    if warm >= total_steps:
        cut = total_steps // 2
        log.warning(
            "%s is %s, the whole run: the learning rate would never reach its peak; warming up for the first half "
            "(%d steps) instead. Set a shorter warm-up (e.g. %s.warmup_fraction=0.05)",
            asked,
            share,
            cut,
            what,
        )
        return cut
    log.warning(
        "%s covers %s, half of the run or more: the learning rate spends most of the run below its peak "
        "(e.g. %s.warmup_fraction=0.05 scales the warm-up with the run)",
        asked,
        share,
        what,
    )
    return warm


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following :func:`lr_factor`, with the warm-up of :func:`warmup_steps`.
    Groups marked ``fixed_lr`` keep their base lr."""
    warmup = warmup_steps(total_steps, steps_per_epoch, cfg.warmup_epochs, cfg.warmup_fraction)

    def scheduled(s: int) -> float:
        return lr_factor(s, total_steps, warmup, cfg.schedule, cfg.min_lr_ratio)

    def constant(s: int) -> float:
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [constant if g.get("fixed_lr") else scheduled for g in optimizer.param_groups]
    )
