"""Listing an image folder once: paths and labels as compact arrays, saved beside the run and read back on resume.

A million-file folder is listed with ``os.scandir`` (no ``stat`` per file, no decoding), kept as one NumPy byte
array of relative paths (no million Python strings for DataLoader workers to copy on write) and written to
``<run>/data/listing-<split>.npz``. A resumed run reads the listing it started with, so the sampler's order is
the same even if files were added since; evaluation of a run can reuse it the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ListingError(ValueError):
    """The folder cannot be listed as images (missing, empty, an empty class folder)."""


class Paths(Sequence[str]):
    """Absolute paths ``root/rel[i]`` from one byte array of relative paths (UTF-8, fixed width): a sequence of
    str that pickles as two objects, whatever the number of files."""

    def __init__(self, root: str, rel: np.ndarray) -> None:
        self.root = root
        self.rel = rel

    @classmethod
    def from_strings(cls, root: str, rel: Sequence[str]) -> Paths:
        return cls(root, np.array([r.encode("utf-8", "surrogateescape") for r in rel], dtype=bytes))

    def __len__(self) -> int:
        return len(self.rel)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return Paths(self.root, self.rel[i])
        return os.path.join(self.root, self.rel[i].decode("utf-8", "surrogateescape"))

    def __iter__(self) -> Iterator[str]:
        for r in self.rel:
            yield os.path.join(self.root, r.decode("utf-8", "surrogateescape"))

    def take(self, ids: Sequence[int] | np.ndarray) -> Paths:
        return Paths(self.root, self.rel[np.asarray(ids, dtype=np.int64)])

    def relative(self, i: int) -> str:
        return self.rel[i].decode("utf-8", "surrogateescape")


def _images_under(top: str, recursive: bool) -> list[str]:
    """Image files under ``top`` (relative to it, '/'-joined), by extension, in sorted order per folder."""
    out: list[str] = []
    stack = [""]
    while stack:
        sub = stack.pop()
        files, dirs = [], []
        with os.scandir(os.path.join(top, sub) if sub else top) as it:
            for e in it:
                if e.is_dir():
                    if recursive:
                        dirs.append(e.name)
                elif e.name.lower().endswith(IMG_EXTENSIONS) and e.is_file():
                    files.append(e.name)
        out += [f"{sub}/{f}" if sub else f for f in sorted(files)]
        stack += [f"{sub}/{d}" if sub else d for d in sorted(dirs, reverse=True)]
    return out


@dataclass
class Listing:
    """The images of a folder: paths, labels (-1 = unlabeled) and class names (None for a flat folder)."""

    paths: Paths
    labels: np.ndarray  # int64 (N,)
    classes: list[str] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) left out when it was verified

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, ids: Sequence[int] | np.ndarray) -> Listing:
        return Listing(self.paths.take(ids), self.labels[np.asarray(ids, dtype=np.int64)], self.classes, self.skipped)

    def save(self, path: Path) -> None:
        """Written atomically (temporary file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            root=np.array(self.paths.root),
            rel=self.paths.rel,
            labels=self.labels,
            classes=np.array(self.classes if self.classes is not None else [], dtype=str),
            labelled=np.array(self.classes is not None),
            skipped=np.array([list(x) for x in self.skipped], dtype=str).reshape(-1, 2),
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Listing:
        with np.load(path, allow_pickle=False) as z:
            classes = [str(c) for c in z["classes"]] if bool(z["labelled"]) else None
            skipped = [(str(f), str(r)) for f, r in z["skipped"]]
            return cls(Paths(str(z["root"]), z["rel"]), z["labels"].astype(np.int64), classes, skipped)


def list_folder(root: str | Path, recursive: bool = False) -> Listing:
    """List an image folder without opening any image.

    ``root/<class>/...`` gives labels from the sorted class folder names (torchvision's ImageFolder rule, images
    found anywhere under a class folder); a folder with images directly inside gives unlabeled images (label -1),
    and with ``recursive`` those in its subfolders too. Raises :class:`ListingError` for a missing folder, no
    images, or a class folder without images.
    """
    top = str(root)
    if not os.path.isdir(top):
        raise ListingError(f"no such image folder {top!r}")
    with os.scandir(top) as it:
        subdirs = sorted(e.name for e in it if e.is_dir())
    if subdirs and not recursive:
        rel: list[str] = []
        labels: list[np.ndarray] = []
        for label, name in enumerate(subdirs):
            found = _images_under(os.path.join(top, name), recursive=True)
            if not found:
                raise ListingError(
                    f"image folder {top!r}: class folder {name!r} has no images ({', '.join(IMG_EXTENSIONS)})"
                )
            rel += [f"{name}/{f}" for f in found]
            labels.append(np.full(len(found), label, dtype=np.int64))
        return Listing(Paths.from_strings(top, rel), np.concatenate(labels), subdirs)
    rel = _images_under(top, recursive)
    if not rel:
        raise ListingError(f"image folder {top!r} has no images ({', '.join(IMG_EXTENSIONS)})")
    return Listing(Paths.from_strings(top, rel), np.full(len(rel), -1, dtype=np.int64), None)
