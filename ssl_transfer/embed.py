"""Embeddings of a folder of images with any encoder: ``ssl-transfer embed ENCODER IMAGES_DIR --out embeddings.npy``.

Writes ``<out>.npy`` (N, D) float32, ``<out>.files.txt`` (row i is line i, paths relative to the folder) and
``<out>.json`` (encoder, preprocessing, counts, skipped files). Images are read, converted and resized
exactly as training read image folders, then normalised by the encoder's own preprocessing. Rows stream to a
memory map; a killed embedding continues where it was when the same command runs again.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssl_transfer.data.datasets import UNREADABLE, FileDataset
from ssl_transfer.data.listing import Listing
from ssl_transfer.data.sources import folder_listing, verified
from ssl_transfer.evaluation.encoders import IMAGENET_MEAN, IMAGENET_STD, resolve_encoder
from ssl_transfer.export.encoder import Encoder

log = logging.getLogger("ssl_transfer")


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


class EmbedProgress:
    """Rows done of ``total``: rewritten in place on a terminal, a line per 5% otherwise, nothing under -q."""

    def __init__(self, total: int, start: int) -> None:
        from ssl_transfer.evaluation.progress import _verbosity

        self.total, self.start = total, start
        self.quiet = _verbosity() == 0
        self.live = not self.quiet and sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.next_line = start + max(1, total // 20)

    def update(self, done: int) -> None:
        if self.quiet or not (self.live or done >= self.next_line or done == self.total):
            return
        rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        line = f"embed: {done:,}/{self.total:,} images ({100 * done / self.total:.0f}%), {rate:.0f} img/s"
        if self.live:
            print(f"\r\033[K{line}", end="\n" if done == self.total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)
            self.next_line = done + max(1, self.total // 20)


def _state_paths(out: Path) -> dict[str, Path]:
    """What an unfinished embedding keeps beside ``out`` so that the same command continues it."""
    return {
        "progress": out.with_suffix(".progress.json"),
        "listing": out.with_suffix(".listing.npz"),
        "ok": out.with_suffix(".ok.npy"),
    }


def _encoder_key(encoder: str | Path | Encoder, enc: Encoder) -> str:
    from ssl_transfer.evaluation.features import fingerprint_module

    return f"{encoder if not isinstance(encoder, Encoder) else enc.meta['backbone']['name']}|{fingerprint_module(enc)}"


def embed_folder(
    encoder: str | Path | Encoder,
    images_dir: str | Path,
    out: str | Path,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    bad_images: str = "skip",
    save_every_s: float = 30.0,
) -> EmbedResult:
    """Embed every readable image under ``images_dir`` with ``encoder`` (a run dir, any export, ``timm:NAME``).

    Rows stream into a memory-mapped ``<out>.npy`` (N, D) float32. Every ``save_every_s`` seconds the rows done
    are recorded (with the file listing and the encoder's weight hash) beside it, so the same call after a kill
    continues from there; a different encoder or folder starts over. Folders over 50,000 files are verified as
    they are read.
    """
    root = Path(images_dir)
    enc = resolve_encoder(encoder, (3, 224, 224), IMAGENET_MEAN, IMAGENET_STD)
    dev = _device(device)
    enc = enc.to(dev).eval()
    out = Path(out).with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    state = _state_paths(out)
    key = _encoder_key(encoder, enc)

    progress = json.loads(state["progress"].read_text()) if state["progress"].is_file() else None
    resumable = (
        progress is not None
        and progress.get("encoder") == key
        and progress.get("images_dir") == str(root.resolve())
        and out.is_file()
        and state["listing"].is_file()
        and state["ok"].is_file()
    )
    if resumable:
        listing = Listing.load(state["listing"])
        done = int(progress["rows_done"])  # type: ignore[index]
        array = np.load(out, mmap_mode="r+")
        ok = np.load(state["ok"], mmap_mode="r+")
        log.info("embed: continuing %s at row %d of %d", out, done, len(listing))
    else:
        found = folder_listing(root, "images_dir", recursive=True)
        listing = verified(found, f"images_dir={root}", bad_images, "auto")
        done = 0
        listing.save(state["listing"])
        array = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(len(listing), enc.embed_dim))
        ok = np.lib.format.open_memmap(state["ok"], mode="w+", dtype=np.bool_, shape=(len(listing),))
    files, skipped = listing.paths, list(listing.skipped)

    def save_progress(rows: int, array: np.ndarray, ok: np.ndarray) -> None:
        array.flush()  # type: ignore[attr-defined]
        ok.flush()  # type: ignore[attr-defined]
        tmp = state["progress"].with_name(state["progress"].name + ".tmp")
        record = {"encoder": key, "images_dir": str(root.resolve()), "rows_done": rows, "rows": len(listing)}
        tmp.write_text(json.dumps(record))
        os.replace(tmp, state["progress"])

    if not resumable:
        save_progress(0, array, ok)
    # the training's image-file dataset; a file that passed the listing but fails to decode keeps its row (marked)
    on_error = "mark" if bad_images == "skip" else "error"
    ds = FileDataset(
        files.take(np.arange(done, len(files))),
        listing.labels[done:],
        enc.preprocess.channels,
        enc.preprocess.size,
        on_error=on_error,
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, num_workers=num_workers, pin_memory=dev.type == "cuda"
    )
    bar = EmbedProgress(len(files), done)
    last_save = time.perf_counter()
    i = done
    with torch.no_grad():
        for images, labels in loader:
            x = enc.preprocess(images.to(dev, non_blocking=True))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                z = enc(x)
            array[i : i + len(z)] = z.float().cpu().numpy()
            ok[i : i + len(z)] = (labels != UNREADABLE).numpy()
            i += len(z)
            bar.update(i)
            if time.perf_counter() - last_save >= save_every_s:
                save_progress(i, array, ok)
                last_save = time.perf_counter()
    save_progress(i, array, ok)
    keep = np.flatnonzero(np.asarray(ok))
    del array, ok
    if len(keep) < len(files):  # files that passed the listing but failed to decode: dropped like the others
        skipped += [(files[j], "decoding failed") for j in np.setdiff1d(np.arange(len(files)), keep)]
        _keep_rows(out, keep)
        files = files.take(keep)

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
    for path in state.values():
        path.unlink(missing_ok=True)
    return EmbedResult(out, files_txt, meta_path, len(files), enc.embed_dim, len(skipped))


def _keep_rows(path: Path, keep: np.ndarray, chunk: int = 65536) -> None:
    """Rewrite the .npy at ``path`` with only the rows ``keep`` (sorted), in chunks (no full copy in memory)."""
    src = np.load(path, mmap_mode="r")
    tmp = path.with_name(path.stem + ".tmp.npy")
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=src.dtype, shape=(len(keep), *src.shape[1:]))
    for s in range(0, len(keep), chunk):
        dst[s : s + chunk] = src[keep[s : s + chunk]]
    dst.flush()
    del src, dst
    os.replace(tmp, path)
