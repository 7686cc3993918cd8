"""The CIFAR-10 data of the benchmarks, from ``../shared/datasets``: the 50,000 training JPEGs extracted once to
a folder (``train/<class>/NNNN.jpg``) and the exact 1,000 test images of ``cifar10_subset.npz`` written beside
them as lossless PNGs (``test/<class>/NNNN.png``), so that ``data.source=imagefolder`` reads both."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]  # labels 0-9
SUBSET = SHARED / "cifar10_subset.npz"


def cifar10_folders(root: str | Path) -> tuple[Path, Path]:
    """(train dir, test dir) under ``root``, made on first use (the tarball is 16 MB, about 20 s to extract)."""
    root = Path(root)
    train, test = root / "train", root / "test"
    if not (train / CLASSES[-1]).is_dir():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(SHARED / "cifar10_train_jpeg.tar.gz") as tar:
            tar.extractall(root, filter="data")
    if not (test / CLASSES[-1]).is_dir():
        with np.load(SUBSET) as z:
            x, y = z["x_test"], z["y_test"]
        for c in CLASSES:
            (test / c).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(x, y)):
            Image.fromarray(img).save(test / CLASSES[int(label)] / f"{i:04d}.png")
    return train, test


def cifar10_overrides(root: str | Path) -> list[str]:
    """Recipe overrides that train on the 50k JPEGs (decoded once into memory) and test on the exact 1k images."""
    train, test = cifar10_folders(root)
    return ["data.source=imagefolder", f"data.root={train}", f"data.test_root={test}", "data.in_memory=true"]
