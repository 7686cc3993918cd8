"""ssl-transfer: self-supervised pretraining of image encoders, one shared evaluator, export for transfer.

Public API (imported lazily so that ``import ssl_transfer`` stays light)::

    recipe = ssl_transfer.load_recipe("quickstart", ["trainer.max_epochs=3"])
    result = ssl_transfer.pretrain(recipe)          # or ssl_transfer.run(recipe): + evaluate + export
    enc = ssl_transfer.load_encoder(result.run_dir)  # nn.Module with .embed_dim, .preprocess, .embed()
    ssl_transfer.export_encoder(result.run_dir, "onnx", "encoder.onnx")  # or torchscript, timm, safetensors

Importing the package registers the small CNNs (cnn_tiny, cnn_small, cnn_base) as timm models, so that
timm exports of them load with ``timm.create_model``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "load_recipe": "ssl_transfer.recipe",
    "Recipe": "ssl_transfer.recipe",
    "pretrain": "ssl_transfer.train",
    "run": "ssl_transfer.train",
    "evaluate": "ssl_transfer.evaluation.protocol",
    "load_encoder": "ssl_transfer.export",
    "save_encoder": "ssl_transfer.export",
    "export_encoder": "ssl_transfer.export",
}

__all__ = list(_API)

try:
    import ssl_transfer.timm_models  # noqa: F401  (timm.create_model("cnn_tiny", ...) for exported small CNNs)
except ImportError:  # timm missing: the rest of the package reports it where it is needed
    pass


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'ssl_transfer' has no attribute {name!r}")
