"""Online monitoring of representation quality while a run trains (a Lightning callback).

Up to ``val_samples`` labelled held-out images are embedded clean, in eval mode and in the run's precision, before
training starts (the random-init baseline) and after every epoch. From those embeddings:

- ``monitor/knn_top1`` (every ``every_n_epochs`` epochs and at the last): kNN top-1 within the held-out split with
  the shared FAISS kNN (:func:`ssl_transfer.evaluation.knn.knn_classify`), two-fold: each half of the images is
  classified with the other half (every other image) as the bank, and the two accuracies averaged. Its bank is small
  (half the
  held-out images), so it reads lower than the final evaluation's kNN over the whole training set, but it costs
  no forward pass beyond the held-out images and sees clean images like the final evaluation does;
- ``monitor/std``: mean over dimensions of the std of the L2-normalised embeddings (0 = collapsed; about
  1/sqrt(D) when they spread evenly over the sphere), and ``monitor/std_ratio`` = std * sqrt(D);
- ``monitor/effective_rank``: RankMe (Garrido et al. 2023), exp of the entropy of the normalised singular values;
- the same two (``monitor/proj_std``, ``proj_std_ratio``, ``proj_effective_rank``) on the method's projection head
  output when it has one: where the loss sees the embedding, and where a collapse shows first;
- ``monitor/alignment`` (mean squared distance between two augmented views of ``align_samples`` held-out images,
  normalised) and ``monitor/uniformity`` (log mean exp(-2 |zi - zj|^2)), Wang & Isola 2020.

A warning names the first epoch at which either embedding has collapsed (std_ratio or effective rank under the
recipe's thresholds). ``save_best`` keeps ``checkpoints/best.ckpt`` at the best monitored kNN.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_transfer.evaluation.knn import knn_classify

if TYPE_CHECKING:
    from ssl_transfer.recipe import MonitorConfig
    from ssl_transfer.training.module import PretrainModule

log = logging.getLogger("ssl_transfer")


def effective_rank(z: Tensor) -> float:
    """RankMe of embeddings (N, D): exp(-sum p_k log p_k), p = singular values / their sum (+1e-7)."""
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum() + 1e-7
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_signals(z: Tensor) -> dict[str, float]:
    """Embeddings (N, D) -> std of the normalised embeddings (mean over dims), std * sqrt(D), RankMe, uniformity;
    all NaN when an embedding is not finite."""
    if not bool(torch.isfinite(z).all()):
        return dict.fromkeys(("std", "std_ratio", "effective_rank", "uniformity"), float("nan"))
    u = F.normalize(z.double(), dim=1)
    std = float(u.std(dim=0).mean())
    sq = torch.cdist(u, u).pow(2)
    n = len(u)
    off = sq[~torch.eye(n, dtype=torch.bool)]
    return {
        "std": std,
        "std_ratio": std * z.shape[1] ** 0.5,
        "effective_rank": effective_rank(z),
        "uniformity": float(torch.log(torch.exp(-2.0 * off).mean())) if n > 1 else 0.0,
    }


def alignment(z0: Tensor, z1: Tensor) -> float:
    """Mean squared distance between normalised embeddings of two views of the same images (N, D) each."""
    return float((F.normalize(z0.double(), dim=1) - F.normalize(z1.double(), dim=1)).pow(2).sum(dim=1).mean())


class Monitor(pl.Callback):
    """kNN on the held-out split and collapse signals, logged under ``monitor/`` (see the module docstring).

    ``val_images``: uint8 (N, C, H, W) held-out images, ``val_labels`` (N,) or None (then no kNN).
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        val_images: Tensor,
        val_labels: Tensor | None,
        k: int,
        temperature: float,
        best_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.k, self.temperature = cfg, k, temperature
        self.val_images = val_images[: cfg.val_samples]
        self.val_labels = val_labels[: cfg.val_samples] if val_labels is not None else None
        self.best_path = Path(best_path) if best_path else None
        self.best_knn = -1.0
        self.collapsed_at: int | None = None
        self.warned_nonfinite = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The baseline before any step (logged as epoch -1 at step 0); not repeated when a run resumes."""
        module = cast("PretrainModule", pl_module)
        if trainer.is_global_zero and trainer.global_step == 0:
            self._log(trainer, module, self.measure(trainer, module), epoch=0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        pl_module = cast("PretrainModule", pl_module)
        epoch = trainer.current_epoch + 1
        metrics = self.measure(
            trainer, pl_module, knn=epoch % self.cfg.every_n_epochs == 0 or epoch == trainer.max_epochs
        )
        self._log(trainer, pl_module, metrics, epoch)
        self._warn_collapse(metrics, epoch)
        if self.best_path is not None and "knn_top1" in metrics and metrics["knn_top1"] > self.best_knn:
            self.best_knn = metrics["knn_top1"]
            trainer.save_checkpoint(self.best_path, weights_only=False)

    def _log(self, trainer: pl.Trainer, pl_module: PretrainModule, metrics: dict[str, float], epoch: int) -> None:
        if epoch == 0:  # before training Lightning does not take logs from callbacks: straight to the loggers
            for lg in trainer.loggers:
                lg.log_metrics({**{f"monitor/{k}": v for k, v in metrics.items()}, "epoch": -1}, step=0)
            return
        for name, value in metrics.items():
            pl_module.log(f"monitor/{name}", value, on_step=False, on_epoch=True, rank_zero_only=True)

    @torch.no_grad()
    def measure(self, trainer: pl.Trainer, pl_module: PretrainModule, knn: bool = True) -> dict[str, float]:
        """Clean embeddings of the held-out images in eval mode (the run's precision) -> signals and kNN."""
        t0 = time.perf_counter()
        method = pl_module.method
        was_training = method.training
        method.eval()
        try:
            with trainer.precision_plugin.forward_context(), torch.random.fork_rng(devices=[]):
                z = self._embed(pl_module, lambda x: x)
                metrics = collapse_signals(z)
                head = getattr(method, "projection_head", None)
                if isinstance(
                    head, torch.nn.Module
                ):  # where the loss sees the embedding, and where collapse shows first
                    p = torch.cat([head(c.to(pl_module.device)).float().cpu() for c in z.split(512)])
                    metrics.update({f"proj_{k}": v for k, v in collapse_signals(p).items() if k != "uniformity"})
                n = min(self.cfg.align_samples, len(self.val_images))
                if n > 1 and pl_module.method.num_views > 1:
                    torch.manual_seed(trainer.current_epoch)
                    augs = pl_module.augments
                    z0 = self._embed(pl_module, augs[0], n)
                    z1 = self._embed(pl_module, augs[1 % len(augs)], n)
                    metrics["alignment"] = alignment(z0, z1)
        finally:
            method.train(was_training)
        if knn and self.val_labels is not None and len(z) >= 4 and bool(torch.isfinite(z).all()):
            metrics["knn_top1"] = self.two_fold_knn(z, self.val_labels)
        metrics["time_s"] = time.perf_counter() - t0
        return metrics

    def two_fold_knn(self, z: Tensor, labels: Tensor) -> float:
        """kNN top-1 of each half of (z, labels) against the other half as the bank, averaged."""
        a, b = slice(0, None, 2), slice(1, None, 2)  # interleaved: the images are spread over the split in its order
        accs = [
            knn_classify(z[bank], labels[bank], z[q], labels[q], k=self.k, temperature=self.temperature, index="exact")[
                "top1"
            ]
            for bank, q in ((a, b), (b, a))
        ]
        return (accs[0] + accs[1]) / 2

    def _embed(self, pl_module: PretrainModule, augment: Any, n: int | None = None, batch: int = 512) -> Tensor:
        images = self.val_images[:n] if n else self.val_images
        out = []
        for i in range(0, len(images), batch):
            x = augment(images[i : i + batch].to(pl_module.device).float().div_(255.0))
            x = pl_module.normalize(x).contiguous(memory_format=pl_module.memory_format)
            out.append(pl_module.method.encoder(x).float().cpu())
        return torch.cat(out)

    def collapsed(self, metrics: dict[str, float]) -> str | None:
        """Which embedding has collapsed ("representation" or "projection"), or None."""
        for prefix, what in (("", "representation"), ("proj_", "projection")):
            if f"{prefix}std_ratio" not in metrics:
                continue
            if (
                metrics[f"{prefix}std_ratio"] < self.cfg.collapse_std_ratio
                or metrics[f"{prefix}effective_rank"] < self.cfg.collapse_rank
            ):
                return what
        return None

    def _warn_collapse(self, metrics: dict[str, float], epoch: int) -> None:
        if metrics["std"] != metrics["std"] and not self.warned_nonfinite:  # NaN: an embedding is inf or NaN
            self.warned_nonfinite = True
            log.warning(
                "epoch %d: the encoder's embeddings of held-out images are not finite in eval mode (BatchNorm running "
                "statistics or weights have blown up); consider a lower optim.lr or a warm-up",
                epoch,
            )
            return
        what = self.collapsed(metrics)
        if what is not None and self.collapsed_at is None:
            self.collapsed_at = epoch
            p = "" if what == "representation" else "proj_"
            log.warning(
                "epoch %d: the %s has collapsed (std of normalised embeddings x sqrt(D) = %.3g, threshold %.3g; "
                "effective rank %.2f, threshold %.2f); check the learning rate, the augmentations and the method's "
                "settings",
                epoch,
                what,
                metrics[f"{p}std_ratio"],
                self.cfg.collapse_std_ratio,
                metrics[f"{p}effective_rank"],
                self.cfg.collapse_rank,
            )
