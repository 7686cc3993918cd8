"""Image shards through LitData (Lightning's streaming engine): ``ssl-transfer shard IMAGES_DIR OUT`` writes them,
``data.source=shards`` trains from them, on a local path or an object-store URL (s3://, gs://, azure://...).

Each item holds the file's original bytes (no re-encoding: decoding, draft mode and conversion stay those of
image folders), its label and its index in the folder's listing. Beside LitData's ``index.json`` and chunks,
``ssl_transfer.json`` records the class names and ``labels.npy`` the labels in shard order, so a run knows its
labels without reading the shards. Reading is random access by global index (``StreamingDataset[i]``), so the
order of a run stays that of :class:`~ssl_transfer.data.sampler.GlobalBatchSampler`: each rank its slice of the
global batch, independent of the world size, and resumable mid-epoch like every other source.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssl_transfer.data.datasets import ArrayDataset, FileDataset
from ssl_transfer.data.listing import Listing

SIDECAR = "ssl_transfer.json"
LABELS = "labels.npy"
REMOTE_PREFIXES = ("s3://", "gs://", "azure://", "r2://", "hf://", "local:")


def require_litdata(what: str) -> None:
    """One clear line when the optional LitData is not installed."""
    import importlib.util

    if importlib.util.find_spec("litdata") is None:
        from ssl_transfer.errors import UserError

        raise UserError(f"{what} needs LitData: pip install 'ssl-transfer[shards]' (or pip install litdata)")


def is_remote(root: str) -> bool:
    return str(root).startswith(REMOTE_PREFIXES)


def _item(entry: tuple[str, int, int]) -> dict[str, Any]:
    """One shard item from (path, label, index): the file's bytes as they are on disk."""
    path, label, index = entry
    with open(path, "rb") as f:
        return {"image": f.read(), "label": int(label), "index": int(index)}


@dataclass
class ShardInfo:
    out: str
    count: int
    classes: list[str] | None
    chunks: int


def write_shards(listing: Listing, out: str | Path, *, chunk_bytes: str = "64MB", num_workers: int = 1) -> ShardInfo:
    """Write the listed images as LitData shards in ``out`` (a local folder), in listing order."""
    require_litdata("ssl-transfer shard")
    from litdata import optimize

    out = Path(out)
    entries = [(p, int(lb), i) for i, (p, lb) in enumerate(zip(listing.paths, listing.labels))]
    optimize(
        fn=_item,
        inputs=entries,
        output_dir=str(out),
        chunk_bytes=chunk_bytes,
        num_workers=max(1, num_workers),
        reorder_files=False,
        keep_data_ordered=True,
        mode="overwrite",
        verbose=False,
        start_method="fork" if os.name == "posix" else None,
    )
    np.save(out / LABELS, listing.labels.astype(np.int64))
    meta = {"format": "ssl_transfer-shards/1", "count": len(listing), "classes": listing.classes}
    (out / SIDECAR).write_text(json.dumps(meta, indent=2))
    index = json.loads((out / "index.json").read_text())
    return ShardInfo(str(out), len(listing), listing.classes, len(index["chunks"]))


def _fetch(root: str, name: str, storage_options: dict | None) -> Path:
    """A sidecar file of the shards at ``root``: the file itself when local, else downloaded to a temp folder."""
    if not is_remote(root):
        return Path(root) / name
    from litdata.streaming.downloader import get_downloader

    local = Path(tempfile.mkdtemp(prefix="ssl_transfer_shards_")) / name
    get_downloader(root, str(local.parent), [], storage_options).download_file(f"{root.rstrip('/')}/{name}", str(local))
    return local


def read_sidecar(root: str, storage_options: dict | None = None) -> tuple[dict, np.ndarray]:
    """(meta, labels) of the shards at ``root``; raises ValueError naming what is missing."""
    require_litdata("data.source=shards")
    side = _fetch(root, SIDECAR, storage_options)
    if not side.is_file() or not (Path(root) / "index.json").is_file() and not is_remote(root):
        raise ValueError(
            f"{root!r} has no LitData shards written by `ssl-transfer shard` ({SIDECAR} and index.json expected)"
        )
    meta = json.loads(side.read_text())
    labels = np.load(_fetch(root, LABELS, storage_options), allow_pickle=False).astype(np.int64)
    if len(labels) != meta.get("count"):
        raise ValueError(f"{root!r}: {LABELS} has {len(labels)} labels for {meta.get('count')} images")
    return meta, labels


class ShardKeys(Sequence[str]):
    """Names of shard items (``<root>#<index>``, for messages) over global indices; ``take`` like Paths."""

    def __init__(self, root: str, ids: np.ndarray) -> None:
        self.root, self.ids = root, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return ShardKeys(self.root, self.ids[i])
        return f"{self.root}#{int(self.ids[i])}"

    def __iter__(self) -> Iterator[str]:
        return (f"{self.root}#{int(j)}" for j in self.ids)

    def take(self, ids: Sequence[int] | np.ndarray) -> ShardKeys:
        return ShardKeys(self.root, self.ids[np.asarray(ids, dtype=np.int64)])


class ShardDataset(FileDataset):
    """:class:`FileDataset` whose images come from LitData shards instead of files: same decoding (draft mode),
    conversion, resizing, transforms and unreadable-image policy. The ``StreamingDataset`` is opened lazily in
    each process (DataLoader workers included) and never pickled."""

    def __init__(
        self,
        root: str,
        labels: np.ndarray,
        channels: int,
        size: tuple[int, int],
        on_error: str = "error",
        decode: str = "full",
        storage_options: dict | None = None,
    ) -> None:
        super().__init__(ShardKeys(root, np.arange(len(labels))), labels, channels, size, None, on_error, decode)
        self.root = root
        self.storage_options = storage_options
        self._stream: Any = None

    def _streaming(self) -> Any:
        if self._stream is None:
            from litdata import StreamingDataset

            self._stream = StreamingDataset(self.root, storage_options=self.storage_options or {})
        return self._stream

    def _open(self, i: int) -> Any:
        assert isinstance(self.files, ShardKeys)
        return io.BytesIO(self._streaming()[int(self.files.ids[i])]["image"])

    def decode_all(self, workers: int = 1) -> ArrayDataset:
        """As :meth:`FileDataset.decode_all`, in one thread (one reader of the shards per process)."""
        return super().decode_all(workers=1)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stream"] = None
        return state
