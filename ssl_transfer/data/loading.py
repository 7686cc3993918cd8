"""Loading a recipe's data: the source by name, channel/size conversion, statistics, and DataLoaders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ssl_transfer.data.datasets import ArrayDataset, FileDataset, collate_batch, convert_channels, resize_uint8
from ssl_transfer.data.listing import Listing
from ssl_transfer.data.sampler import GlobalBatchSampler
from ssl_transfer.data.sources import SOURCES, DataError, listing_path

if TYPE_CHECKING:
    from ssl_transfer.recipe import DataConfig


@dataclass
class DataBundle:
    """Train/test datasets plus what an encoder needs to know about its inputs."""

    train: ArrayDataset | FileDataset
    test: ArrayDataset | FileDataset | None
    channels: int
    image_size: tuple[int, int]
    mean: list[float]
    std: list[float]
    num_classes: int | None
    classes: list[str] | None
    source: str
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # unreadable images left out: (path, reason)
    config: Any = None  # the recipe's DataConfig it was built from (kept with evaluation results)
    listings: dict[str, Listing] = field(default_factory=dict)  # file sources: the folders as listed

    def save_listings(self, run_dir: Path) -> None:
        """Keep the file listings beside the run (``<run>/data/listing-<split>.npz``), for resume."""
        for split, listing in self.listings.items():
            listing.save(listing_path(run_dir, split))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def describe(self) -> dict:
        """Plain-data summary stored with runs and exported encoders."""
        return {
            "source": self.source,
            "input_shape": list(self.input_shape),
            "mean": self.mean,
            "std": self.std,
            "num_classes": self.num_classes,
            "classes": self.classes,
            "train_size": len(self.train),
            "test_size": len(self.test) if self.test is not None else 0,
            "skipped_files": len(self.skipped_files),
        }


def _prepare_arrays(ds: ArrayDataset, cfg: DataConfig) -> ArrayDataset:
    x = ds.images
    if cfg.channels:
        x = convert_channels(x, cfg.channels)
    if cfg.image_size:
        x = resize_uint8(x, (cfg.image_size, cfg.image_size))
    return ArrayDataset(x, ds.labels)


def channel_stats(ds: ArrayDataset | FileDataset, max_files: int = 2000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units: exact for arrays, from up to ``max_files`` evenly spread files."""
    if isinstance(ds, ArrayDataset):
        x = ds.images
        n, c = x.shape[:2]
        s = torch.zeros(c, dtype=torch.float64)
        s2 = torch.zeros(c, dtype=torch.float64)
        for i in range(0, n, 8192):
            chunk = x[i : i + 8192].to(torch.float64) / 255.0
            s += chunk.sum(dim=(0, 2, 3))
            s2 += (chunk**2).sum(dim=(0, 2, 3))
        count = n * x.shape[2] * x.shape[3]
    else:
        step = max(1, len(ds) // max_files)
        imgs = torch.stack([ds[i][0] for i in range(0, len(ds), step)]).to(torch.float64) / 255.0
        s, s2 = imgs.sum(dim=(0, 2, 3)), (imgs**2).sum(dim=(0, 2, 3))
        count = imgs.shape[0] * imgs.shape[2] * imgs.shape[3]
    mean = s / count
    std = (s2 / count - mean**2).clamp_min(1e-12).sqrt()
    return [round(float(m), 6) for m in mean], [round(max(float(v), 1e-3), 6) for v in std]


def build_data(cfg: DataConfig, listing_dir: Path | None = None) -> DataBundle:
    """Load the recipe's data source, convert channels/size, apply ``limit_train`` and compute normalisation.

    ``listing_dir``: a run directory whose saved file listings (``DataBundle.save_listings``) are read back
    instead of listing the folders again (resume: the same files in the same order)."""
    src = SOURCES.get(cfg.source)
    raw = src.load(cfg, listing_dir=listing_dir) if src.listed else src.load(cfg)
    train, test = raw.train, raw.test
    if isinstance(train, ArrayDataset):
        train = _prepare_arrays(train, cfg)
        test = _prepare_arrays(test, cfg) if isinstance(test, ArrayDataset) else test
        channels, size = train.images.shape[1], tuple(train.images.shape[2:])
    else:
        channels, size = train.channels, train.size
    if test is not None and isinstance(test, ArrayDataset) and tuple(test.images.shape[1:]) != (channels, *size):
        raise DataError(
            f"test images are {tuple(test.images.shape[1:])}, train images {(channels, *size)}; set data.image_size"
        )
    if cfg.limit_train:
        train = train.subset(min(cfg.limit_train, len(train)))
    if len(train) == 0:
        raise DataError(f"data.source={cfg.source}: the training split is empty")
    mean, std = channel_stats(train)
    labels = np.asarray(train.labels)
    labelled = labels[labels >= 0]
    num_classes = len(raw.classes) if raw.classes else (int(labelled.max()) + 1 if len(labelled) else None)
    return DataBundle(
        train,
        test,
        int(channels),
        (int(size[0]), int(size[1])),
        mean,
        std,
        num_classes,
        raw.classes,
        cfg.source,
        raw.skipped,
        cfg,
        raw.listings,
    )


def resolve_workers(ds: ArrayDataset | FileDataset, num_workers: int | str) -> int:
    """``"auto"``: no workers for in-memory arrays (a batch is one index op), min(8, usable CPUs) for files."""
    if num_workers != "auto":
        return int(num_workers)
    if not isinstance(ds, FileDataset):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus)


def make_loader(
    ds: ArrayDataset | FileDataset, batch_size: int, *, shuffle: bool, drop_last: bool, num_workers: int | str = "auto"
) -> DataLoader:
    """A DataLoader of (uint8 images (B, C, H, W), int64 labels (B,)); in-memory arrays are gathered per batch,
    files are decoded in ``num_workers`` processes into pinned memory (when CUDA is there)."""
    num_workers = resolve_workers(ds, num_workers)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last and len(ds) >= batch_size,
        num_workers=num_workers,
        collate_fn=collate_batch,
        pin_memory=isinstance(ds, FileDataset) and torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )


def make_train_loader(
    ds: ArrayDataset | FileDataset, batch_size: int, *, seed: int, num_workers: int | str = "auto"
) -> DataLoader:
    """The pretraining loader: ``batch_size`` images per rank per step from a seeded, resumable
    :class:`GlobalBatchSampler` (shuffled each epoch, last partial batch dropped)."""
    num_workers = resolve_workers(ds, num_workers)
    return DataLoader(
        ds,
        batch_sampler=GlobalBatchSampler(len(ds), batch_size, shuffle=True, drop_last=True, seed=seed),
        num_workers=num_workers,
        collate_fn=collate_batch,
        pin_memory=isinstance(ds, FileDataset) and torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # worker seeds; keeps the global RNG out of loader starts
    )
