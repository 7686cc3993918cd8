"""ssl-transfer: self-supervised pretraining of image encoders, one shared evaluator, export for transfer.

Public API (imported lazily so that ``import ssl_transfer`` stays light)::

    recipe = ssl_transfer.load_recipe("quickstart", ["trainer.max_epochs=3"])
    result = ssl_transfer.pretrain(recipe)          # or ssl_transfer.run(recipe): + evaluate + export
    enc = ssl_transfer.load_encoder(result.run_dir)  # nn.Module with .embed_dim, .preprocess, .embed()
    ssl_transfer.export_encoder(result.run_dir, "onnx", "encoder.onnx")  # or torchscript, timm, safetensors

Importing the package registers the small CNNs and CIFAR ResNets (cnn_tiny, cnn_small, cnn_base,
resnet18_cifar, resnet50_cifar) as timm models, so that timm exports of them load with ``timm.create_model``;
the registration runs when timm is imported (now if it already is), so ``import ssl_transfer`` itself loads
neither torch nor timm.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
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


def _register_with_timm() -> None:
    try:
        import ssl_transfer.timm_models  # noqa: F401  (timm.create_model("cnn_tiny", ...) for exported small CNNs)
    except ModuleNotFoundError as e:  # torch or timm missing: the package reports it where it is needed
        if e.name not in ("torch", "timm"):
            raise


class _AfterTimmImport:
    """A meta-path finder that runs :func:`_register_with_timm` right after ``timm`` is first imported, so that
    ``import ssl_transfer`` stays light (no torch, no timm: the CLI's ``-h`` starts at once) and still makes
    ``timm.create_model("cnn_tiny")`` work whenever timm is imported, before or after us."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                _register_with_timm()

        spec.loader = _Loader()
        return spec


if "timm" in sys.modules:
    _register_with_timm()
elif not any(isinstance(f, _AfterTimmImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterTimmImport())  # type: ignore[arg-type]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'ssl_transfer' has no attribute {name!r}")
