"""The one LightningModule: uint8 batch -> batched augmentation -> normalised views -> method -> loss.

Besides the weights, optimizer and scheduler that Lightning saves, checkpoints carry what an exact resume
needs: where the sampler stood in the epoch and the RNG states (restored just before the next step).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch
from torch import Tensor

from ssl_transfer.data.datasets import decode_batch
from ssl_transfer.data.sampler import GlobalBatchSampler, world
from ssl_transfer.data.views import Augment
from ssl_transfer.errors import NonFiniteError
from ssl_transfer.methods.base import PretextMethod
from ssl_transfer.training.optim import build_optimizer, build_scheduler
from ssl_transfer.training.plots import save_grid
from ssl_transfer.training.rng import rng_state, set_rng_state

if TYPE_CHECKING:
    from ssl_transfer.recipe import OptimConfig


class PretrainModule(pl.LightningModule):
    """Wraps any PretextMethod; knows no method by name.

    Batches arrive as uint8 (B, C, H, W); augmentation runs batched on the training device without
    gradients, then images are normalised with the dataset's per-channel mean and std.
    """

    method: PretextMethod
    mean: Tensor
    std: Tensor
    plot_images: Tensor

    def __init__(
        self,
        method: PretextMethod,
        augments: list[Augment],
        mean: Sequence[float],
        std: Sequence[float],
        optim: OptimConfig,
        plot_dir: str | Path | None = None,
        plot_images: Tensor | None = None,
        *,
        sampler: GlobalBatchSampler | None = None,
        seed: int = 0,
        check_finite: bool = True,
        check_grads: bool = True,
        channels_last: bool = False,
        local_augment: Augment | None = None,
        decode_to: tuple[int, tuple[int, int]] | None = None,
    ) -> None:
        """``sampler``: the training loader's batch sampler (its position is checkpointed). ``check_finite``:
        stop on a non-finite loss, and (``check_grads``) gradients, before the optimizer step applies them.
        ``channels_last``: views are handed to the method in channels_last memory format (the trainer converts
        the model). ``local_augment``: the batched pipeline of the method's ``num_local_views`` local views.
        ``decode_to``: (channels, (H, W)) of batches that arrive as encoded JPEGs (``data.decode=device``)."""
        super().__init__()
        self.method = method
        self.augments = torch.nn.ModuleList(augments)
        self.local_augment = local_augment
        self.optim_cfg = optim
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.plot_dir = Path(plot_dir) if plot_dir else None
        self.register_buffer(
            "plot_images",
            plot_images if plot_images is not None else torch.zeros(0, dtype=torch.uint8),
            persistent=False,
        )
        self.sampler, self.seed = sampler, seed
        self.check_finite, self.check_grads = check_finite, check_grads
        self._batches_done = 0  # in the current epoch, for the sampler's checkpointed position
        self._pending_rng: dict | None = None
        self._last_loss: Tensor | None = None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._epoch_start, self._epoch_images = 0.0, 0
        self._data_wait, self._waiting_since = 0.0, 0.0
        self.decode_to = decode_to
        self.decode_failures = 0

    @staticmethod
    def _encoded(images: object) -> bool:
        return isinstance(images, list) and bool(images) and isinstance(images[0], Tensor) and images[0].ndim < 4

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Encoded JPEGs stay on the CPU (``decode_jpeg`` reads its input there and decodes on ``device``)."""
        images, labels = batch
        if self._encoded(images):
            return images, labels.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def normalize(self, x01: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> normalised."""
        return (x01 - self.mean) / self.std

    def make_views(self, images: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """uint8 (B, C, H, W) -> ``method.num_views`` augmented, normalised float views (view i: pipeline i % n),
        then ``method.num_local_views`` local views (multi-crop, smaller) from the local pipeline.

        uint8 (B, V, C, H, W) are views already made per image (``augment.backend: pil``); view i is
        ``images[:, i]`` and goes through pipeline i % n (additive noise only, in that mode). With local views
        made per image the batch is a pair [(B, V, C, H, W), (B, L, C, h, w)].
        """
        n, n_local = self.method.num_views, self.method.num_local_views
        local = None
        if not isinstance(images, Tensor):
            images, local = images
        with torch.no_grad():
            if images.ndim == 5:
                xs = [images[:, i].float().div_(255.0) for i in range(n)]
            else:
                x = images.float().div_(255.0)
                xs = [x] * n
            views = [self.normalize(self.augments[i % len(self.augments)](xi)) for i, xi in enumerate(xs)]
            if n_local:
                assert self.local_augment is not None, "local views need the local pipeline"
                ls = [local[:, i].float().div_(255.0) for i in range(n_local)] if local is not None else [x] * n_local
                views += [self.normalize(self.local_augment(li)) for li in ls]
            return [v.contiguous(memory_format=self.memory_format) for v in views]

    def training_step(self, batch: tuple[Tensor | list[Tensor], Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        if self._encoded(images):
            assert self.decode_to is not None, "encoded images need decode_to"
            images, failures = decode_batch(images, *self.decode_to, self.device)  # type: ignore[arg-type]
            self.decode_failures += failures
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = int(self.trainer.num_training_batches) // max(1, self.trainer.accumulate_grad_batches)
        self.method.set_progress(self.global_step, total, per_epoch)
        out = self.method.training_step(self.make_views(images))
        loss = out["loss"]
        self._last_loss = loss.detach()
        self._batches_done = batch_idx + 1
        bs = len(labels)
        self._epoch_images += bs
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        for k, v in out.items():
            if k != "loss":
                self.log(f"train/{k}", v, on_step=True, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log(
            "train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=bs
        )
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop before a non-finite loss or gradient reaches the weights; the last checkpoint stays good."""
        self._check_finite()
        self.method.before_optimizer_step()
        for group in optimizer.param_groups:  # the method's weight-decay schedule (constant by default)
            base = group.setdefault("base_weight_decay", group["weight_decay"])
            if base:
                group["weight_decay"] = self.method.weight_decay(base)

    def _check_finite(self) -> None:
        if not self.check_finite or self._last_loss is None:
            return
        loss = self._last_loss.float()
        grads = [p.grad for p in self.parameters() if p.grad is not None] if self.check_grads else []
        gnorm = torch.nn.utils.get_total_norm(grads).float() if grads else torch.zeros((), device=loss.device)
        if bool(torch.isfinite(loss) & torch.isfinite(gnorm)):
            return
        step, epoch = self.global_step, self.current_epoch
        where = f"step {step} (epoch {epoch}, batch {self._batches_done - 1})"
        if not torch.isfinite(loss):
            raise NonFiniteError(f"non-finite loss ({loss.item()}) at {where}", step)
        raise NonFiniteError(
            f"non-finite gradients (norm {gnorm.item()}) at {where}; the loss was {loss.item():.6g}", step
        )

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.method.after_optimizer_step()  # momentum encoders: before any checkpoint of this step is written

    def on_train_start(self) -> None:
        rank, world_size = world()
        if world_size > 1:  # each rank its own augmentation stream (rank 0's state is what checkpoints keep)
            torch.manual_seed(self.seed * 1_000_003 + rank * 7919 + self.global_step)

    def on_train_epoch_start(self) -> None:
        self._epoch_start, self._epoch_images = time.perf_counter(), 0
        self._data_wait, self._waiting_since = 0.0, self._epoch_start
        if self.sampler is not None:  # a new order each epoch (Lightning only sets epochs on plain samplers)
            self.sampler.set_epoch(self.current_epoch)
        if self._pending_rng is None:
            self._batches_done = 0

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._data_wait += time.perf_counter() - self._waiting_since  # the loader's time since the last step ended
        if self._pending_rng is not None:  # resuming: the generators continue exactly where the checkpoint left them
            if world()[1] == 1:
                set_rng_state(self._pending_rng)
            self._pending_rng = None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()  # after the callbacks' batch-end hooks (checkpoints), which are not data time
        self.log(
            "data_wait",
            self._data_wait / max(1e-9, now - self._epoch_start),
            on_step=True,
            on_epoch=False,
            prog_bar=True,
            logger=False,
            batch_size=1,
        )
        self._waiting_since = now

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ssl_transfer"] = {
            "sampler": {"epoch": self.current_epoch, "batches_done": self._batches_done},
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("ssl_transfer")
        if state is None:
            return
        if self.sampler is not None:
            self.sampler.resume(state["sampler"]["epoch"], state["sampler"]["batches_done"])
        self._batches_done = state["sampler"]["batches_done"]
        self._pending_rng = state["rng"]

    def on_train_epoch_end(self) -> None:
        self._log_epoch_speed()
        if self.plot_dir is None or len(self.plot_images) == 0 or not self.trainer.is_global_zero:
            return
        was_training = self.method.training
        self.method.eval()
        try:  # plots draw from their own RNG stream, so that they do not change the training run
            with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                grids = self.method.visualize(self.normalize(self.plot_images.float() / 255.0))
        finally:
            self.method.train(was_training)
        for name, imgs in grids.items():
            save_grid(
                imgs,
                self.mean.flatten().tolist(),
                self.std.flatten().tolist(),
                self.plot_dir / f"{name}_epoch{self.current_epoch + 1:03d}.png",
                nrow=len(self.plot_images),
            )

    def _log_epoch_speed(self) -> None:
        """``train/epoch_time_s`` (loader start to last step, waiting for the GPU), ``train/images_per_s``
        (images through all ranks per second of it) and ``train/data_wait_share``: the share of the epoch this rank
        spent waiting for the loader between steps (as LightlyTrain's data_wait; near 0 when the model is the
        bottleneck, near 1 when the loader is)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self._epoch_start
        images = self._epoch_images * self.trainer.world_size
        self.log("train/epoch_time_s", seconds, on_step=False, on_epoch=True, rank_zero_only=True)
        self.log("train/images_per_s", images / seconds, on_step=False, on_epoch=True, rank_zero_only=True)
        self.log("train/data_wait_share", self._data_wait / seconds, on_step=False, on_epoch=True, rank_zero_only=True)

    def global_batch_size(self) -> int | None:
        """Images per optimizer step over all ranks (the loader's per-rank batch times the world size)."""
        if self.sampler is None:
            return None
        return int(self.sampler.batch_size) * int(self.trainer.world_size)

    def configure_optimizers(self):
        opt = build_optimizer(self.method, self.optim_cfg, global_batch=self.global_batch_size())
        total = int(self.trainer.estimated_stepping_batches)  # also sets num_training_batches
        per_epoch = max(1, int(self.trainer.num_training_batches))
        sched = build_scheduler(opt, self.optim_cfg, total, per_epoch)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
