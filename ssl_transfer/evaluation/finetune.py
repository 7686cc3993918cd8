"""Fine-tuning strategies from the transfer-learning literature, and the from-scratch baseline.

- ``full``: every parameter trains (Yosinski et al. 2014; Kornblith et al. 2019).
- ``freeze:k``: the first k blocks (input side) are frozen, weights and BatchNorm statistics alike.
- ``head``: feature extraction; the whole encoder is frozen and only the linear head trains.
- ``llrd``: layer-wise (discriminative) lr decay: block i of n gets lr * decay^(n - i), the head lr
  (Howard & Ruder 2018 ULMFiT; BEiT/MAE fine-tuning).
- scratch: the same architecture re-initialised, trained like ``full``.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.optim import param_groups_layer_decay
from torch import Tensor, nn

from ssl_transfer.data import make_loader
from ssl_transfer.data.augment_spec import AugmentConfig
from ssl_transfer.data.datasets import ImageDataset
from ssl_transfer.data.views import build_augment
from ssl_transfer.evaluation.accuracy import topk_correct
from ssl_transfer.evaluation.blocks import encoder_blocks
from ssl_transfer.training.optim import lr_factor, warmup_steps

STRATEGY = re.compile(r"^(full|head|llrd|scratch|freeze:\d+)$")


class Classifier(nn.Module):
    """encoder -> linear head: (B, C, H, W) -> logits (B, num_classes)."""

    def __init__(self, encoder: nn.Module, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """timm's grouping interface: parameter name -> block index, the encoder's blocks input to output
        (:func:`encoder_blocks`), then the head as the last block."""
        blocks = encoder_blocks(self.encoder)
        index = {f"encoder.{n}": i for i, block in enumerate(blocks) for n in block}
        return lambda name: index.get(name, len(blocks))


def reinitialized(module: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``module`` with every submodule's ``reset_parameters`` called (BatchNorm statistics too)."""
    torch.manual_seed(seed)
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if hasattr(m, "reset_parameters"):
            cast(Any, m).reset_parameters()
    return twin


def setup_strategy(
    model: Classifier, strategy: str, lr: float, weight_decay: float, layer_decay: float = 0.75
) -> tuple[torch.optim.Optimizer, dict]:
    """Freeze what the strategy freezes and build AdamW with its per-block learning rates.

    Returns the optimizer and a description: frozen block count, trainable parameter count, lr per group.
    """
    if not STRATEGY.match(strategy):
        raise ValueError(f"unknown fine-tuning strategy {strategy!r}; known: full, head, llrd, freeze:K, scratch")
    blocks = encoder_blocks(model.encoder)
    n = len(blocks)
    frozen = 0
    if strategy == "head":
        frozen = n
    elif strategy.startswith("freeze:"):
        frozen = int(strategy.split(":")[1])
        if not 0 <= frozen <= n:
            raise ValueError(f"freeze:{frozen}: the encoder has {n} blocks")
    params = dict(model.encoder.named_parameters())
    for block in blocks[:frozen]:
        for name in block:
            params[name].requires_grad_(False)
    # timm's BEiT-style groups: block i of n scaled by layer_decay^(n - i), the head by 1; no decay on 1-d params
    groups = param_groups_layer_decay(model, weight_decay, layer_decay=layer_decay if strategy == "llrd" else 1.0)
    for g in groups:
        g["lr"] = lr * g.pop("lr_scale")
    block_of, name_of = model.group_matcher(), {id(p): name for name, p in model.named_parameters()}
    for g in groups:
        g["block"] = block_of(name_of[id(g["params"][0])])
    opt = torch.optim.AdamW(groups, lr=lr)
    info = {
        "strategy": strategy,
        "blocks": n,
        "frozen_blocks": frozen,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "block_lrs": {int(g["block"]): g["lr"] for g in groups},
    }
    return opt, info


def _freeze_batchnorm_of_frozen(model: nn.Module) -> None:
    """BatchNorm layers whose parameters are all frozen run in eval mode: their statistics stay put."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters())
            if ps and not any(p.requires_grad for p in ps):
                m.eval()


@torch.no_grad()
def accuracy(
    model: nn.Module,
    dataset: ImageDataset,
    preprocess: Callable[[Tensor], Tensor],
    device: torch.device,
    batch_size: int = 512,
) -> dict:
    """Top-1/top-5 of ``model`` on ``dataset``, in eval mode."""
    model.eval()
    hits1 = hits5 = total = 0
    for images, y in make_loader(dataset, batch_size, shuffle=False, drop_last=False):
        logits = model(preprocess(images.to(device).float() / 255.0))
        c1, c5 = topk_correct(logits, y)
        hits1 += c1
        hits5 += c5
        total += len(y)
    return {"top1": hits1 / total, "top5": hits5 / total}


def train_classifier(
    encoder: nn.Module,
    embed_dim: int,
    train_set: ImageDataset,
    preprocess: Callable[[Tensor], Tensor],
    num_classes: int,
    strategy: str = "full",
    epochs: int = 20,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    layer_decay: float = 0.75,
    warmup_epochs: float = 0.0,
    batch_size: int = 128,
    min_steps: int = 300,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
) -> tuple[Classifier, dict]:
    """The training half of :func:`finetune`: a copy of ``encoder`` + a linear head trained on ``train_set`` with
    ``strategy``. Returns the trained :class:`Classifier` and a dict of its setup (strategy, frozen blocks, lr
    groups, steps, final train loss). The caller's encoder is never modified. ``on_epoch(epoch, epochs)`` is
    called as each pass over ``train_set`` starts (progress output)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    enc = reinitialized(encoder, seed) if strategy == "scratch" else copy.deepcopy(encoder)
    model = Classifier(enc, embed_dim, num_classes).to(device)
    opt, info = setup_strategy(model, "full" if strategy == "scratch" else strategy, lr, weight_decay, layer_decay)
    info["strategy"] = strategy
    aug = build_augment(augment, *_shape(train_set)) if augment is not None else None
    loader = make_loader(train_set, batch_size, shuffle=True, drop_last=False)
    per_epoch = math.ceil(len(train_set) / batch_size)
    total = max(min_steps, epochs * per_epoch)
    warm = warmup_steps(total, per_epoch, warmup_epochs, what="eval.finetune")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warm, "cosine", 0.0))
    last_loss = float("nan")
    step = 0
    passes = math.ceil(total / per_epoch)
    while step < total:
        if on_epoch is not None:
            on_epoch(step // per_epoch + 1, passes)
        model.train()
        if strategy == "head":
            model.encoder.eval()
        _freeze_batchnorm_of_frozen(model)
        for images, y in loader:
            x = images.to(device).float() / 255.0
            if aug is not None:
                with torch.no_grad():
                    x = aug(x)
            loss = F.cross_entropy(model(preprocess(x)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            last_loss = float(loss.detach())
            step += 1
            if step >= total:
                break
    return model, {**info, "steps": total, "lr": lr, "final_train_loss": last_loss, "n_train": len(train_set)}


def finetune(
    encoder: nn.Module,
    embed_dim: int,
    train_set: ImageDataset,
    test_set: ImageDataset,
    preprocess: Callable[[Tensor], Tensor],
    num_classes: int,
    strategy: str = "full",
    device: str | torch.device | None = None,
    **options: Any,
) -> dict:
    """Train a copy of ``encoder`` + a linear head on ``train_set`` with ``strategy`` (see
    :func:`train_classifier` for ``options``: epochs, lr, weight_decay, layer_decay, warmup_epochs, batch_size,
    min_steps, augment, seed); test accuracy and setup.

    The budget is ``epochs`` passes or ``min_steps`` optimizer steps, whichever is more (tiny label budgets
    would otherwise get a handful of steps). The lr warms up linearly for ``warmup_epochs`` (the pretraining
    rule of :func:`~ssl_transfer.training.optim.warmup_steps`: warned about at half the run, cut to half when as
    long as the run), then follows a cosine to 0.

    ``preprocess`` maps float images in [0, 1] (B, C, H, W) to the encoder's input. ``strategy="scratch"``
    re-initialises the encoder first and trains everything. The caller's encoder is never modified.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, info = train_classifier(
        encoder, embed_dim, train_set, preprocess, num_classes, strategy, device=device, **options
    )
    return {**accuracy(model, test_set, preprocess, device), **info}


def _shape(ds: ImageDataset) -> tuple[int, tuple[int, int]]:
    x = ds[0][0]
    return int(x.shape[0]), (int(x.shape[1]), int(x.shape[2]))
