"""Datasets that yield ``(image uint8 (C, H, W), label int64)``; label -1 means unlabeled.

Images stay uint8 until they reach the training device, where they are augmented and normalised in batches.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ssl_transfer.errors import UserError

MAX_WORKER_SLOTS = 65


def to_nchw_uint8(x: np.ndarray | Tensor) -> Tensor:
    """Arrays of N×H×W, N×H×W×C (C in 1, 3) or N×C×H×W -> uint8 tensor N×C×H×W.

    Floats in [0, 1] are scaled to [0, 255]; other floats and ints are clipped to [0, 255].
    """
    t = torch.as_tensor(np.asarray(x))
    if t.ndim == 3:
        t = t[:, None]
    elif t.ndim == 4:
        if t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
            t = t.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"images must be N×H×W, N×H×W×C or N×C×H×W, got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        t = t.float()
        if t.numel() and t.max() <= 1.0:
            t = t * 255.0
        t = t.round().clamp(0, 255).to(torch.uint8)
    return t.contiguous()


def convert_channels(x: Tensor, channels: int) -> Tensor:
    """uint8 or float (…, C, H, W) with C in (1, 3) -> ``channels`` channels: gray repeated to RGB, RGB to
    ITU-R 601 luminance (0.299 R + 0.587 G + 0.114 B, as PIL's ``convert("L")``), one rule for every path."""
    c = x.shape[-3]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    if c == 3 and channels == 1:
        return TF.rgb_to_grayscale(x, num_output_channels=1)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize_uint8(x: Tensor, size: tuple[int, int], chunk: int = 4096) -> Tensor:
    """Antialiased bilinear resize of uint8 (N, C, H, W) images, in chunks to bound memory."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return torch.cat([TF.resize(x[i : i + chunk], list(size), antialias=True) for i in range(0, len(x), chunk)])


class ArrayDataset(Dataset):
    """In-memory uint8 images (N, C, H, W) and int64 labels (N,); batches are gathered with one index op."""

    def __init__(self, images: Tensor, labels: Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = (
            torch.full((len(images),), -1, dtype=torch.long)
            if labels is None
            else torch.as_tensor(labels, dtype=torch.long)
        )
        if len(self.labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, idx: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Whole batch at once; paired with :func:`collate_batch` in the DataLoader."""
        index = torch.as_tensor(idx, dtype=torch.long)
        return self.images[index], self.labels[index]

    def subset(self, n: int) -> ArrayDataset:
        return ArrayDataset(self.images[:n], self.labels[:n])


def collate_batch(items: tuple[Any, Tensor] | list[tuple[Any, Tensor]]) -> tuple[Any, Tensor]:
    """Collate for both dataset kinds: a pre-batched (images, labels) pair passes through, samples are stacked.
        Samples whose image is a tuple of tensors (global views (V, C, H, W), local views (L, C, h, w): multi-crop made
        per image) give a list with each part stacked: [(B, V, C, H, W), (B, L, C, h, w)]. A batch with encoded JPEGs
    (1-D uint8, ``decode="device"``) stays a list of per-image tensors for :func:`decode_batch`."""
    if isinstance(items, tuple):
        return items
    labels = torch.as_tensor([int(lb) for _, lb in items], dtype=torch.long)
    if any(isinstance(im, Tensor) and im.ndim == 1 for im, _ in items):  # encoded JPEGs: decoded on the device
        return [im for im, _ in items], labels
    if isinstance(items[0][0], tuple):
        return [torch.stack(part) for part in zip(*(im for im, _ in items))], labels
    return torch.stack([im for im, _ in items]), labels


def load_image(path: str | Path | IO[bytes], channels: int, size: tuple[int, int], decode: str = "full") -> Tensor:
    """Read one image file -> uint8 (channels, H, W) resized to ``size``.

    ``decode="draft"`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, PIL draft mode)
    while that stays at least ``size``: a 1000 px photo read for 224 px decodes 4x fewer pixels. ``"full"``
    decodes every pixel first. (``"device"`` reads like ``"draft"`` here; the training loader hands JPEGs to
    :func:`decode_batch` instead.)
    """
    with Image.open(path) as im:
        mode = "L" if channels == 1 else "RGB"
        if decode in ("draft", "device") and im.format == "JPEG":
            im.draft(mode, (size[1], size[0]))
        im = im.convert(mode)
        t = TF.pil_to_tensor(im)
    return resize_uint8(t[None], size)[0]


def encoded_jpeg_or_image(src: Any, channels: int, size: tuple[int, int]) -> Tensor:
    """A JPEG's bytes as 1-D uint8 (decoded later, in batches, on the training device); any other image decoded
    here to uint8 (channels, H, W) at ``size``."""
    if isinstance(src, (str, Path)):
        with open(src, "rb") as f:
            data = f.read()
    else:
        data = src.getvalue()
    if data[:3] == b"\xff\xd8\xff":
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return load_image(io.BytesIO(data), channels, size, "full")


def decode_batch(
    images: Sequence[Tensor], channels: int, size: tuple[int, int], device: torch.device | str
) -> tuple[Tensor, int]:
    """Encoded JPEGs (1-D uint8, on the CPU) and already decoded images (C, H, W) -> uint8 (B, channels, *size) on
    ``device``, and the number of JPEGs that failed to decode (each replaced by a readable image of the batch).

    JPEGs are decoded together by ``torchvision.io.decode_jpeg`` on ``device`` (nvJPEG on a GPU), then resized
    with antialiasing one by one (their sizes differ)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    out: list[Tensor | None] = [None if t.ndim == 1 else t.to(device) for t in images]
    coded = [i for i, t in enumerate(images) if t.ndim == 1]
    if coded:
        try:
            decoded: list[Tensor | None] = list(decode_jpeg([images[i].cpu() for i in coded], mode=mode, device=device))
        except RuntimeError:  # one bad file fails the batch call: decode one by one to find it
            decoded = []
            for i in coded:
                try:
                    decoded.append(decode_jpeg(images[i].cpu(), mode=mode, device=device))
                except RuntimeError:
                    decoded.append(None)
        for i, d in zip(coded, decoded):
            out[i] = d
    good = [t for t in out if t is not None]
    if not good:
        raise UnreadableImageError(f"none of the {len(images)} images of a batch could be decoded")
    failures = len(out) - len(good)
    resized = [resize_uint8((t if t is not None else good[0])[None], size)[0] for t in out]
    return torch.stack(resized), failures


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a readable image (PIL's reason), or None. Checks the header and the file's
    integrity (``Image.verify``: CRCs of PNG, structure of most formats) without decoding all pixels."""
    try:
        with Image.open(path) as im:
            im.verify()
        return None
    except Exception as e:  # PIL raises many kinds: UnidentifiedImageError, OSError, SyntaxError, ValueError...
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"


def check_images(files: Sequence[str], workers: int = 8) -> tuple[list[int], list[tuple[str, str]]]:
    """Indices of readable ``files`` and (path, reason) of the others; files are checked in threads."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(image_problem, files, chunksize=64))
    good = [i for i, p in enumerate(problems) if p is None]
    bad = [(files[i], p) for i, p in enumerate(problems) if p is not None]
    return good, bad


class UnreadableImageError(UserError, OSError):
    """An image file that passed the scan could not be decoded (``data.bad_images=error``)."""


UNREADABLE = -2  # the label FileDataset(on_error="mark") gives a file it could not decode


class FileDataset(Dataset):
    """Images read from files on demand (image folders, ``ssl-transfer embed``), converted and resized as they
    are read.

    With ``transform`` (a callable on the PIL image, e.g. a multi-view augmentation) the image is handed to it
    at full resolution instead of being resized; ``decode`` is :func:`load_image`'s. A file that fails to decode
    (corrupt, truncated, removed since the listing; large folders are verified as they are read) raises with
    its path (``on_error="error"``), is replaced by the next readable file and counted in ``read_failures``
    (``"skip"``, for training; workers' counts included), or keeps its place as a zero image labelled
    :data:`UNREADABLE` (``"mark"``, for embedding, where row i must be file i).
    """

    def __init__(
        self,
        files: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        channels: int,
        size: tuple[int, int],
        transform: Callable | None = None,
        on_error: str = "error",
        decode: str = "full",
    ) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.files = files if hasattr(files, "take") else list(files)  # Paths, ShardKeys: kept as they are
        self.labels = np.asarray(labels, dtype=np.int64)
        self.channels, self.size = channels, size
        self.transform = transform
        self.on_error = on_error
        self.decode = decode
        # files that could not be read, per DataLoader worker (slot 0: the main process), in shared memory so the
        # training process sees the workers' counts
        self._failures = torch.zeros(MAX_WORKER_SLOTS, dtype=torch.int64).share_memory_()

    @property
    def read_failures(self) -> int:
        """Files that failed to decode so far, in this process and its DataLoader workers."""
        return int(self._failures.sum())

    def _count_failure(self) -> None:
        info = torch.utils.data.get_worker_info()
        self._failures[0 if info is None else 1 + info.id % (MAX_WORKER_SLOTS - 1)] += 1

    def __len__(self) -> int:
        return len(self.files)

    def _open(self, i: int) -> Any:
        """What PIL opens for item ``i``: its path here; bytes for datasets that hold images elsewhere."""
        return self.files[i]

    def _read(self, i: int) -> Tensor:
        if self.decode == "device" and self.transform is None:
            return encoded_jpeg_or_image(self._open(i), self.channels, self.size)
        if self.transform is None:
            return load_image(self._open(i), self.channels, self.size, self.decode)
        with Image.open(self._open(i)) as im:
            return self.transform(im.convert("L" if self.channels == 1 else "RGB"))

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        for attempt in range(min(len(self.files), 16)):
            j = (i + attempt) % len(self.files)
            try:
                return self._read(j), torch.tensor(int(self.labels[j]))
            except Exception as e:
                if self.on_error == "mark":
                    self._count_failure()
                    return torch.zeros(self.channels, *self.size, dtype=torch.uint8), torch.tensor(UNREADABLE)
                if self.on_error != "skip":
                    raise UnreadableImageError(
                        f"cannot read image {self.files[j]} ({type(e).__name__}: {e}); "
                        "set data.bad_images=skip (ssl-transfer embed: --bad-images skip) to skip such files"
                    ) from None
                self._count_failure()
        raise UnreadableImageError(f"16 image files in a row from {self.files[i]} could not be read")

    def take(self, ids: Sequence[int]) -> FileDataset:
        """The files at ``ids``, same settings (and same class), its own failure count."""
        index = np.asarray(ids, dtype=np.int64)
        out = copy.copy(self)
        take = getattr(self.files, "take", None)
        out.files = take(index) if take is not None else [self.files[i] for i in index]
        out.labels = self.labels[index]
        out._failures = torch.zeros(MAX_WORKER_SLOTS, dtype=torch.int64).share_memory_()
        return out

    def subset(self, n: int) -> FileDataset:
        return self.take(range(min(n, len(self.files))))

    def decode_all(self, workers: int = 8) -> ArrayDataset:
        """Every image decoded once (in threads: PIL releases the GIL while decoding) into an in-memory
        :class:`ArrayDataset`, uint8 (N, C, H, W); unreadable files follow ``on_error`` as in ``__getitem__``."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            items = list(pool.map(self.__getitem__, range(len(self.files)), chunksize=256))
        return ArrayDataset(torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]).long())

    def with_transform(self, transform: Callable | None) -> FileDataset:
        out = self.take(range(len(self.files)))
        out.transform = transform
        return out


ImageDataset = ArrayDataset | FileDataset  # what make_loader, extract_features and the evaluator take
