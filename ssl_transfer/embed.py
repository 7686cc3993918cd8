"""Embeddings of a folder of images with any encoder: ``ssl-transfer embed ENCODER IMAGES_DIR --out embeddings.npy``.

Writes ``<out>.npy`` (N, D) float32, ``<out>.files.txt`` (row i is line i, paths relative to the folder) and
``<out>.json`` (encoder, preprocessing, counts, skipped files). Images are read, converted and resized
exactly as training read image folders, then normalised by the encoder's own preprocessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssl_transfer.data.datasets import UNREADABLE, FileDataset
from ssl_transfer.data.listing import ListingError, list_folder
from ssl_transfer.data.sources import DataError, verified
from ssl_transfer.evaluation.encoders import resolve_encoder
from ssl_transfer.export.encoder import Encoder


@dataclass
class EmbedResult:
    embeddings: Path
    files: Path
    meta: Path
    count: int
    dim: int
    skipped: int


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def embed_folder(
    encoder: str | Path | Encoder,
    images_dir: str | Path,
    out: str | Path,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    bad_images: str = "skip",
) -> EmbedResult:
    """Embed every readable image under ``images_dir`` with ``encoder`` (a run dir, any export, ``timm:NAME``)."""
    root = Path(images_dir)
    enc = resolve_encoder(encoder, (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    dev = _device(device)
    enc = enc.to(dev).eval()
    try:
        found = list_folder(root, recursive=True)
    except ListingError as e:
        raise DataError(f"images_dir: {e}") from None
    listing = verified(found, f"images_dir={root}", bad_images, "all")
    files, skipped = listing.paths, list(listing.skipped)
    # the training's image-file dataset; a file that passed the scan but fails to decode keeps its row (marked)
    on_error = "mark" if bad_images == "skip" else "error"
    ds = FileDataset(files, listing.labels, enc.preprocess.channels, enc.preprocess.size, on_error=on_error)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=num_workers, pin_memory=dev.type == "cuda"
    )

    out = Path(out).with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(len(files), enc.embed_dim))
    i = 0
    ok = np.ones(len(files), dtype=bool)
    with torch.no_grad():
        for images, labels in loader:
            x = enc.preprocess(images.to(dev, non_blocking=True))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                z = enc(x)
            array[i : i + len(z)] = z.float().cpu().numpy()
            ok[i : i + len(z)] = (labels != UNREADABLE).numpy()
            i += len(z)
    array.flush()
    del array
    if not ok.all():  # files that passed the scan but failed to decode: dropped like the others
        skipped += [(files[j], "decoding failed") for j in np.flatnonzero(~ok)]
        kept = np.load(out, mmap_mode="r")[ok]
        np.save(out, kept)
        files = files.take(np.flatnonzero(ok))

    files_txt = out.with_suffix(".files.txt")
    files_txt.write_text("".join(str(Path(f).relative_to(root)) + "\n" for f in files))
    meta = {
        "encoder": str(encoder) if not isinstance(encoder, Encoder) else enc.meta["backbone"]["name"],
        "backbone": enc.meta["backbone"],
        "images_dir": str(root.resolve()),
        "count": len(files),
        "embed_dim": enc.embed_dim,
        "dtype": "float32",
        "preprocess": enc.meta["input"],
        "skipped_files": [{"file": str(Path(f).relative_to(root)), "reason": r} for f, r in skipped],
    }
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps(meta, indent=2))
    return EmbedResult(out, files_txt, meta_path, len(files), enc.embed_dim, len(skipped))
