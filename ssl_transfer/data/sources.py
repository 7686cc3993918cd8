"""Data sources by name. Each turns the recipe's data section into train/test datasets of uint8 images.

Array sources (digits, npz, mnist, fashion_mnist, cifar10, stl10) are held in memory; ``imagefolder`` reads
files on demand. torchvision sources read the standard files under ``data.root`` and download only when
``data.download=true``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ssl_transfer.data.datasets import ArrayDataset, FileDataset, check_images, to_nchw_uint8
from ssl_transfer.data.listing import Listing, ListingError, list_folder
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
    listings: dict[str, Listing] = field(default_factory=dict)  # file sources: what was listed, saved with the run


@dataclass
class Source:
    load: Callable[..., RawData]  # (DataConfig) -> RawData; listed sources also take listing_dir=
    description: str
    required: tuple[str, ...] = field(default_factory=tuple)
    listed: bool = False  # reads a listing of files that a run saves and a resumed run reads back


SOURCES: Registry[Source] = Registry("data source")


def source(name: str, description: str, required: tuple[str, ...] = (), listed: bool = False) -> Callable:
    def deco(fn: Callable[..., RawData]) -> Callable[..., RawData]:
        SOURCES.register(name)(Source(fn, description, required, listed))
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


def cpu_decode(mode: str) -> str:
    """How the datasets of a source decode: ``device`` applies to the training loader only (train.py); evaluation,
    monitoring and statistics read in draft mode."""
    return "draft" if mode == "device" else mode


VERIFY_ALL_MAX = 50_000  # data.verify=auto checks every file up front in folders up to this size


def folder_listing(root: str | Path, where: str, recursive: bool = False) -> Listing:
    """:func:`list_folder` with its errors as :class:`DataError` naming the recipe key or argument."""
    try:
        return list_folder(root, recursive)
    except ListingError as e:
        raise DataError(f"{where}: {e}") from None


def verified(listing: Listing, where: str, policy: str, verify: str) -> Listing:
    """``listing`` with unreadable files dropped (``policy="skip"``: counted and logged) or an error naming them
    (``"error"``). Every file is checked (header and integrity, no full decode) when ``verify="all"``, or
    ``"auto"`` and at most VERIFY_ALL_MAX files; otherwise files are checked as training reads them."""
    if verify == "lazy" or (verify == "auto" and len(listing) > VERIFY_ALL_MAX):
        return listing
    files = listing.paths
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
    kept = listing.take(good)
    kept.skipped = list(bad)
    return kept


def listing_path(directory: Path, split: str) -> Path:
    return directory / "data" / f"listing-{split}.npz"


def _listing(cfg: DataConfig, split: str, root: str, listing_dir: Path | None) -> Listing:
    """The split's listing: the one saved in ``listing_dir`` (a resumed run) when it lists the same folder,
    else the folder listed and verified now."""
    where = f"data.{'root' if split == 'train' else 'test_root'}={root}"
    saved = listing_path(listing_dir, split) if listing_dir is not None else None
    if saved is not None and saved.is_file():
        try:
            listing = Listing.load(saved)
        except Exception as e:
            raise DataError(f"{saved}: the run's saved listing of {root!r} is not readable ({e}); delete it") from None
        if os.path.realpath(listing.paths.root) == os.path.realpath(root):
            log.info("%s: %d files from the run's listing %s", where, len(listing), saved)
            return listing
    return verified(folder_listing(root, where), where, cfg.bad_images, cfg.verify)


def _input_format(first: object, cfg: DataConfig) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) of training: the recipe's, else those of the first image (a path or bytes)."""
    with Image.open(first) as im:  # type: ignore[arg-type]
        native_channels = 1 if im.mode in ("L", "I", "I;16", "1") else 3
        native_size = (im.height, im.width)
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else native_size
    return cfg.channels or native_channels, size


@source(
    "imagefolder",
    "images under data.root: root/<class>/*.png gives labels, a flat folder none; data.test_root optional",
    ("root",),
    listed=True,
)
def load_imagefolder(cfg: DataConfig, listing_dir: Path | None = None) -> RawData:
    train_list = _listing(cfg, "train", cfg.root, listing_dir)  # type: ignore[arg-type]
    channels, size = _input_format(train_list.paths[0], cfg)
    listings = {"train": train_list}
    train = FileDataset(
        train_list.paths, train_list.labels, channels, size, on_error=cfg.bad_images, decode=cpu_decode(cfg.decode)
    )
    test = None
    if cfg.test_root:
        test_list = _listing(cfg, "test", cfg.test_root, listing_dir)
        if train_list.classes and test_list.classes and test_list.classes != train_list.classes:
            raise DataError(
                f"data.test_root classes {test_list.classes} differ from data.root classes {train_list.classes}"
            )
        listings["test"] = test_list
        test = FileDataset(
            test_list.paths, test_list.labels, channels, size, on_error=cfg.bad_images, decode=cpu_decode(cfg.decode)
        )
    skipped = [s for lst in listings.values() for s in lst.skipped]
    if cfg.in_memory:
        train, test = train.decode_all(), test.decode_all() if test is not None else None  # type: ignore[assignment]
    return RawData(train, test, train_list.classes, skipped, listings)


@source(
    "shards",
    "LitData shards written by `ssl-transfer shard` at data.root (a folder or an s3://, gs://... URL); "
    "data.test_root optional",
    ("root",),
)
def load_shards(cfg: DataConfig) -> RawData:
    from ssl_transfer.data.shards import ShardDataset, read_sidecar

    def split(root: str, key: str) -> tuple[ShardDataset, list[str] | None]:
        try:
            meta, labels = read_sidecar(root)
        except (OSError, ValueError) as e:
            raise DataError(f"data.{key}={root}: {e}") from None
        ds = ShardDataset(root, labels, 3, (1, 1), on_error=cfg.bad_images, decode=cpu_decode(cfg.decode))
        return ds, meta.get("classes")

    train, classes = split(cfg.root, "root")  # type: ignore[arg-type]
    try:
        channels, size = _input_format(train._open(0), cfg)
    except Exception as e:
        raise DataError(f"data.root={cfg.root}: the first image in the shards is not readable ({e})") from None
    train.channels, train.size = channels, size
    test = None
    if cfg.test_root:
        test, test_classes = split(cfg.test_root, "test_root")
        if classes and test_classes and test_classes != classes:
            raise DataError(f"data.test_root classes {test_classes} differ from data.root classes {classes}")
        test.channels, test.size = channels, size
    if cfg.in_memory:
        return RawData(train.decode_all(), test.decode_all() if test is not None else None, classes)
    return RawData(train, test, classes)
