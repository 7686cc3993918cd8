"""Encoders for downstream use: the :class:`Encoder` (backbone + preprocessing + metadata), export to
safetensors, TorchScript, ONNX and timm, and one ``load_encoder`` for all of them."""

from ssl_transfer.export.encoder import (
    Encoder,
    HeadedBackbone,
    Preprocess,
    encoder_meta,
    exportable,
    package_versions,
    rebuild_backbone,
    save_encoder,
    save_run_encoder,
)
from ssl_transfer.export.formats import (
    FORMATS,
    ExportError,
    ExportResult,
    default_export_path,
    export_encoder,
    load_encoder,
)

__all__ = [
    "Encoder",
    "HeadedBackbone",
    "Preprocess",
    "encoder_meta",
    "exportable",
    "package_versions",
    "rebuild_backbone",
    "save_encoder",
    "save_run_encoder",
    "FORMATS",
    "ExportError",
    "ExportResult",
    "default_export_path",
    "export_encoder",
    "load_encoder",
]
