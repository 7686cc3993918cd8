"""Embed a dataset once: no grad, eval mode, preprocessed exactly as the encoder expects; cached by content."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ssl_transfer.data import make_loader
from ssl_transfer.data.datasets import ArrayDataset, FileDataset, ImageDataset


def normalize(x_uint8: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (B, C, H, W) -> float (B, C, H, W) with per-channel (x/255 - mean) / std."""
    m = torch.as_tensor(mean, device=x_uint8.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x_uint8.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (x_uint8.float() / 255.0 - m) / s


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: ImageDataset,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    num_workers: int | str = "auto",
    preprocess: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Features (N, D) float32 on CPU and labels (N,) int64 of every image in ``dataset``.

    Images go through ``preprocess`` (uint8 batch -> encoder input), or are normalised with ``mean``/``std``.
    The encoder is moved to ``device`` and put in eval mode for the pass (BatchNorm uses its running statistics
    and does not update them), and goes back to its device and mode afterwards. On CUDA the forward runs under
    bf16 autocast.
    """
    if preprocess is None:
        if mean is None or std is None:
            raise ValueError("extract_features needs preprocess, or mean and std")
        preprocess = lambda x: normalize(x, mean, std)  # noqa: E731
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    was_training = encoder.training
    home = next((t.device for t in (*encoder.parameters(), *encoder.buffers())), device)
    encoder.to(device).eval()  # a CPU encoder (load_encoder's default) on a CUDA machine computes on the GPU
    feats, labels = [], []
    try:
        for images, y in make_loader(dataset, batch_size, shuffle=False, drop_last=False, num_workers=num_workers):
            x = preprocess(images.to(device, non_blocking=True)).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                f = encoder(x)
            feats.append(f.float().cpu())
            labels.append(y)
    finally:
        encoder.train(was_training).to(home)
    return torch.cat(feats), torch.cat(labels)


def fingerprint_module(module: nn.Module) -> str:
    """Content hash of a module's parameters and buffers (names, shapes and values)."""
    h = hashlib.sha1()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def fingerprint_dataset(ds: ImageDataset) -> str:
    """Content hash of an in-memory dataset, or of a file dataset's paths, sizes and mtimes."""
    h = hashlib.sha1()
    if isinstance(ds, ArrayDataset):
        h.update(str(tuple(ds.images.shape)).encode())
        h.update(ds.images.numpy().tobytes())
        h.update(ds.labels.numpy().tobytes())
    elif isinstance(ds, FileDataset):
        h.update(str((ds.channels, tuple(ds.size))).encode())
        for f, y in zip(ds.files, ds.labels):
            st = Path(f).stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}|{y}".encode())
    else:
        raise TypeError(f"cannot fingerprint {type(ds).__name__}")
    return h.hexdigest()[:16]


class FeatureCache:
    """Features computed once per (encoder, dataset, preprocessing): kept in memory and, with ``directory``,
    on disk as ``<encoder>-<dataset>-<tag>.pt`` (loaded with weights_only=True)."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self._mem: dict[str, tuple[Tensor, Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def get(
        self, encoder: nn.Module, dataset: ImageDataset, tag: str, compute: Callable[[], tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """Cached ``compute()`` for this encoder's weights, this dataset's content and ``tag`` (preprocessing)."""
        key = (
            f"{fingerprint_module(encoder)}-{fingerprint_dataset(dataset)}-{hashlib.sha1(tag.encode()).hexdigest()[:8]}"
        )
        if key in self._mem:
            self.hits += 1
            return self._mem[key]
        path = self.directory / f"{key}.pt" if self.directory else None
        if path is not None and path.is_file():
            blob = torch.load(path, weights_only=True)
            out = (blob["features"], blob["labels"])
            self.hits += 1
        else:
            out = compute()
            self.misses += 1
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save({"features": out[0], "labels": out[1]}, tmp)
                tmp.replace(path)
        self._mem[key] = out
        return out
