"""Data sources by name. Each turns the recipe's data section into train/test datasets of uint8 images.

Array sources (digits, npz, mnist, fashion_mnist, cifar10, stl10) are held in memory; ``imagefolder`` reads
files on demand. torchvision sources read the standard files under ``data.root`` and download only when
``data.download=true``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ssl_transfer.data.datasets import ArrayDataset, FileDataset, check_images, to_nchw_uint8
from ssl_transfer.errors import UserError
from ssl_transfer.registry import Registry

if TYPE_CHECKING:
    from ssl_transfer.recipe import DataConfig

log = logging.getLogger("ssl_transfer")


class DataError(UserError):
    """The data could not be found or read."""


@dataclass
class RawData:
    """What a source returns: datasets at native size/channels (arrays) or already converted (files)."""

    train: ArrayDataset | FileDataset
    test: ArrayDataset | FileDataset | None
    classes: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of unreadable images left out


@dataclass
class Source:
    load: Callable[[DataConfig], RawData]
    description: str
    required: tuple[str, ...] = field(default_factory=tuple)


SOURCES: Registry[Source] = Registry("data source")


def source(name: str, description: str, required: tuple[str, ...] = ()) -> Callable:
    def deco(fn: Callable[[DataConfig], RawData]) -> Callable[[DataConfig], RawData]:
        SOURCES.register(name)(Source(fn, description, required))
        return fn

    return deco


@source(
    "digits", "scikit-learn's 8x8 handwritten digits (1,797 images, bundled, no network); fixed stratified 80/20 split"
)
def load_digits(cfg: DataConfig) -> RawData:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    idx_tr, idx_te = train_test_split(np.arange(len(images)), test_size=0.2, stratify=d.target, random_state=0)
    x = to_nchw_uint8(images)
    y = torch.as_tensor(d.target, dtype=torch.long)
    return RawData(ArrayDataset(x[idx_tr], y[idx_tr]), ArrayDataset(x[idx_te], y[idx_te]), [str(i) for i in range(10)])


@source("npz", "a .npz archive with x_train, y_train, x_test, y_test (e.g. ../shared/datasets/mnist.npz)", ("path",))
def load_npz(cfg: DataConfig) -> RawData:
    path = Path(cfg.path)  # type: ignore[arg-type]
    if not path.is_file():
        raise DataError(f"data.path: no such file {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/ValueError on a damaged archive
        raise DataError(f"data.path: cannot read {str(path)!r} as .npz ({e})") from None
    if "x_train" not in arrays:
        raise DataError(f"data.path: {str(path)!r} has no x_train array (has: {', '.join(arrays)})")

    def split(prefix: str) -> ArrayDataset | None:
        xk, yk = f"x_{prefix}", f"y_{prefix}"
        if xk not in arrays:
            if yk in arrays:
                raise DataError(f"data.path={path}: has {yk} but no {xk}")
            return None
        try:
            x = to_nchw_uint8(arrays[xk])
        except ValueError as e:
            raise DataError(f"data.path={path}: {xk}: {e}") from None
        y = arrays.get(yk)
        return ArrayDataset(x, None if y is None else _npz_labels(y, yk, xk, len(x), path))

    return RawData(split("train"), split("test"))  # type: ignore[arg-type]


def _npz_labels(y: np.ndarray, yk: str, xk: str, n: int, path: Path) -> torch.Tensor:
    """``y`` as int64 labels for ``n`` images: one integer per image, >= 0, or -1 for an unlabeled image."""
    where = f"data.path={path}: {yk}"
    if y.ndim != 1:
        raise DataError(f"{where} has shape {y.shape}; labels are one integer per image (N,)")
    if len(y) != n:
        raise DataError(f"{where} has {len(y)} labels but {xk} has {n} images; they must be the same length")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(
                f"{where} has dtype {y.dtype} with non-integer values; labels are integers (>= 0, or -1 for unlabeled)"
            )
    labels = torch.as_tensor(y.astype(np.int64))
    if len(labels) and int(labels.min()) < -1:
        raise DataError(f"{where} has label {int(labels.min())}; labels are >= 0, or -1 for an unlabeled image")
    return labels


def _torchvision(cls_name: str, cfg: DataConfig, **kwargs) -> object:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    try:
        return cls(root=cfg.root, download=cfg.download, **kwargs)
    except RuntimeError as e:
        hint = "" if cfg.download else "; set data.download=true to fetch it (needs network)"
        raise DataError(f"data.root={cfg.root}: {cls_name} not usable ({str(e).splitlines()[0]}){hint}") from None


def _classes(ds: object) -> list[str] | None:
    classes = getattr(ds, "classes", None)
    return [str(c) for c in classes] if classes else None


def _mnist_like(cls_name: str) -> Callable[[DataConfig], RawData]:
    def load(cfg: DataConfig) -> RawData:
        tr, te = (_torchvision(cls_name, cfg, train=t) for t in (True, False))
        return RawData(
            ArrayDataset(to_nchw_uint8(tr.data), tr.targets),  # type: ignore[attr-defined]
            ArrayDataset(to_nchw_uint8(te.data), te.targets),  # type: ignore[attr-defined]
            _classes(tr),
        )

    return load


source("mnist", "MNIST via torchvision under data.root (28x28 gray)", ("root",))(_mnist_like("MNIST"))
source("fashion_mnist", "Fashion-MNIST via torchvision under data.root (28x28 gray)", ("root",))(
    _mnist_like("FashionMNIST")
)


@source("cifar10", "CIFAR-10 via torchvision under data.root (32x32 RGB)", ("root",))
def load_cifar10(cfg: DataConfig) -> RawData:
    tr, te = (_torchvision("CIFAR10", cfg, train=t) for t in (True, False))
    return RawData(
        ArrayDataset(to_nchw_uint8(tr.data), torch.as_tensor(tr.targets)),  # type: ignore[attr-defined]
        ArrayDataset(to_nchw_uint8(te.data), torch.as_tensor(te.targets)),  # type: ignore[attr-defined]
        _classes(tr),
    )


@source(
    "stl10",
    "STL-10 via torchvision under data.root (96x96 RGB); data.unlabeled adds the 100k unlabeled images",
    ("root",),
)
def load_stl10(cfg: DataConfig) -> RawData:
    tr = _torchvision("STL10", cfg, split="train+unlabeled" if cfg.unlabeled else "train")
    te = _torchvision("STL10", cfg, split="test")
    return RawData(
        ArrayDataset(to_nchw_uint8(tr.data), torch.as_tensor(tr.labels.astype(np.int64))),  # type: ignore[attr-defined]
        ArrayDataset(to_nchw_uint8(te.data), torch.as_tensor(te.labels.astype(np.int64))),  # type: ignore[attr-defined]
        _classes(tr),
    )


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan_folder(root: Path) -> tuple[list[str], list[int], list[str] | None]:
    """Files and labels of an image folder.

    ``root/<class>/<image>`` gives labels from the sorted class folder names (torchvision's ImageFolder rule);
    a folder with images directly inside gives unlabeled images (label -1).
    """
    import torchvision.datasets as tvd

    if not root.is_dir():
        raise DataError(f"no such image folder {str(root)!r}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if subdirs:
        try:
            folder = tvd.ImageFolder(str(root), loader=lambda p: p)  # scan only; images are read later
        except FileNotFoundError as e:
            raise DataError(f"image folder {str(root)!r}: {e}") from None
        return [f for f, _ in folder.samples], [lb for _, lb in folder.samples], list(folder.classes)
    files = list_images(root)
    return files, [-1] * len(files), None


def list_images(root: Path, recursive: bool = False) -> list[str]:
    """Image files (by extension) directly in ``root``, or anywhere under it; sorted. Raises if there are none."""
    if not root.is_dir():
        raise DataError(f"no such image folder {str(root)!r}")
    found = root.rglob("*") if recursive else root.iterdir()
    files = sorted(str(p) for p in found if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"image folder {str(root)!r} has no images ({', '.join(IMG_EXTENSIONS)})")
    return files


def readable_images(
    files: list[str], labels: list[int], where: str, policy: str
) -> tuple[list[str], list[int], list[tuple[str, str]]]:
    """Drop unreadable files (``policy="skip"``: counted and logged) or fail naming them (``"error"``)."""
    good, bad = check_images(files)
    if bad:
        first = f"{bad[0][0]} ({bad[0][1]})"
        if policy == "error":
            raise DataError(
                f"{where}: {len(bad)} of {len(files)} files are not readable images, e.g. {first}; "
                "set data.bad_images=skip to leave them out"
            )
        log.warning(
            "%s: skipped %d of %d files that are not readable images, e.g. %s", where, len(bad), len(files), first
        )
        if not good:
            raise DataError(f"{where}: none of the {len(files)} files is a readable image, e.g. {first}")
    return [files[i] for i in good], [labels[i] for i in good], bad


@source(
    "imagefolder",
    "images under data.root: root/<class>/*.png gives labels, a flat folder none; data.test_root optional",
    ("root",),
)
def load_imagefolder(cfg: DataConfig) -> RawData:
    files, labels, classes = scan_folder(Path(cfg.root))  # type: ignore[arg-type]
    files, labels, skipped = readable_images(files, labels, f"data.root={cfg.root}", cfg.bad_images)
    with Image.open(files[0]) as im:
        native_channels = 1 if im.mode in ("L", "I", "I;16", "1") else 3
        native_size = (im.height, im.width)
    channels = cfg.channels or native_channels
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else native_size
    train = FileDataset(files, labels, channels, size, on_error=cfg.bad_images)
    test = None
    if cfg.test_root:
        tfiles, tlabels, tclasses = scan_folder(Path(cfg.test_root))
        if classes and tclasses and tclasses != classes:
            raise DataError(f"data.test_root classes {tclasses} differ from data.root classes {classes}")
        tfiles, tlabels, tskipped = readable_images(tfiles, tlabels, f"data.test_root={cfg.test_root}", cfg.bad_images)
        skipped += tskipped
        test = FileDataset(tfiles, tlabels, channels, size, on_error=cfg.bad_images)
    if cfg.in_memory:
        return RawData(train.decode_all(), test.decode_all() if test is not None else None, classes, skipped)
    return RawData(train, test, classes, skipped)
