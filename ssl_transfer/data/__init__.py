"""Data: sources by name, uint8 datasets, per-channel statistics and batched augmentations.

Names are imported on first use (PEP 562), so the recipe schema can import ``ssl_transfer.data.augment_spec``
without torch, kornia or the data sources.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ssl_transfer.data.loading import DataBundle, build_data, make_loader, make_train_loader, resolve_workers
    from ssl_transfer.data.sources import SOURCES, DataError

_LAZY = {
    "DataBundle": "ssl_transfer.data.loading",
    "build_data": "ssl_transfer.data.loading",
    "make_loader": "ssl_transfer.data.loading",
    "make_train_loader": "ssl_transfer.data.loading",
    "resolve_workers": "ssl_transfer.data.loading",
    "SOURCES": "ssl_transfer.data.sources",
    "DataError": "ssl_transfer.data.sources",
}
__all__ = [
    "DataBundle",
    "build_data",
    "make_loader",
    "make_train_loader",
    "resolve_workers",
    "SOURCES",
    "DataError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
