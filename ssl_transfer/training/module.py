"""The one LightningModule: uint8 batch -> batched augmentation -> normalised views -> method -> loss."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from ssl_transfer.data.views import Augment
from ssl_transfer.methods.base import PretextMethod
from ssl_transfer.training.optim import build_optimizer, build_scheduler
from ssl_transfer.training.plots import save_grid

if TYPE_CHECKING:
    from ssl_transfer.recipe import OptimConfig


class PretrainModule(pl.LightningModule):
    """Wraps any PretextMethod; knows no method by name.

    Batches arrive as uint8 (B, C, H, W); augmentation runs batched on the training device without
    gradients, then images are normalised with the dataset's per-channel mean and std.
    """

    def __init__(
        self,
        method: PretextMethod,
        augments: list[Augment],
        mean: Sequence[float],
        std: Sequence[float],
        optim: "OptimConfig",
        plot_dir: str | Path | None = None,
        plot_images: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.method = method
        self.augments = torch.nn.ModuleList(augments)
        self.optim_cfg = optim
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.plot_dir = Path(plot_dir) if plot_dir else None
        self.register_buffer("plot_images", plot_images if plot_images is not None else torch.zeros(0, dtype=torch.uint8), persistent=False)

    def normalize(self, x01: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> normalised."""
        return (x01 - self.mean) / self.std

    def make_views(self, images: Tensor) -> list[Tensor]:
        """uint8 (B, C, H, W) -> ``method.num_views`` augmented, normalised float views (view i: pipeline i % n).

        uint8 (B, V, C, H, W) are views already made per image (``augment.backend: pil``); view i is
        ``images[:, i]`` and goes through pipeline i % n (additive noise only, in that mode).
        """
        n = self.method.num_views
        with torch.no_grad():
            if images.ndim == 5:
                xs = [images[:, i].float().div_(255.0) for i in range(n)]
            else:
                x = images.float().div_(255.0)
                xs = [x] * n
            return [self.normalize(self.augments[i % len(self.augments)](xi)) for i, xi in enumerate(xs)]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        self.method.set_progress(self.global_step, int(self.trainer.estimated_stepping_batches))
        out = self.method.training_step(self.make_views(images))
        loss = out["loss"]
        bs = len(images)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        for k, v in out.items():
            if k != "loss":
                self.log(f"train/{k}", v, on_step=True, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.method.after_optimizer_step()

    def on_train_epoch_end(self) -> None:
        if self.plot_dir is None or len(self.plot_images) == 0 or not self.trainer.is_global_zero:
            return
        was_training = self.method.training
        self.method.eval()
        try:
            with torch.no_grad():
                grids = self.method.visualize(self.normalize(self.plot_images.float() / 255.0))
        finally:
            self.method.train(was_training)
        for name, imgs in grids.items():
            save_grid(imgs, self.mean.flatten().tolist(), self.std.flatten().tolist(),
                      self.plot_dir / f"{name}_epoch{self.current_epoch + 1:03d}.png", nrow=len(self.plot_images))

    def configure_optimizers(self):
        opt = build_optimizer(self.method, self.optim_cfg)
        total = int(self.trainer.estimated_stepping_batches)  # also sets num_training_batches
        per_epoch = max(1, int(self.trainer.num_training_batches))
        sched = build_scheduler(opt, self.optim_cfg, total, per_epoch)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
