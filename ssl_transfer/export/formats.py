"""Export formats and the one loader for all of them.

========== ================================== ==============================================================
format     files                              loads with
========== ================================== ==============================================================
safetensors ``<out>.safetensors`` + ``.json`` ``load_encoder`` (rebuilds the backbone from the JSON)
torchscript ``<out>.pt`` + ``.json``          ``torch.jit.load`` (no ssl_transfer needed); ``load_encoder``
pt2        ``<out>.pt2`` + ``.json``         ``torch.export.load(path).module()``; ``load_encoder``
onnx       ``<out>.onnx`` + ``.json``         onnxruntime, any ONNX runtime; ``load_encoder``
timm       ``<out>/`` model.safetensors,      ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=
           config.json, encoder.json          dict(file=...), ...)`` or ``"local-dir:<out>"``; ``load_encoder``
========== ================================== ==============================================================

Every exported module maps *preprocessed* images (B, C, H, W) float32 to embeddings (B, D); the JSON
beside it says how to preprocess (channels, size, mean, std) and carries backbone, method, recipe, eval
metrics and package versions. Each export is loaded back and checked against the live encoder.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file, save_model
from torch import Tensor, nn

from ssl_transfer.backbones import TimmBackbone
from ssl_transfer.errors import UserError
from ssl_transfer.export.encoder import Encoder, HeadedBackbone, load_safetensors_encoder
from ssl_transfer.registry import Registry

CHECK_ATOL = 1e-4


class ExportError(UserError):
    """An export that cannot be written, or whose reloaded embeddings differ from the live encoder's."""


@dataclass
class Format:
    """How one format is written (module in eval mode on CPU, metadata, output path) and read back."""

    suffix: str  # "" for a folder
    write: Callable[[nn.Module, dict[str, Any], Path], dict[str, Any]]  # returns metadata to add under "export"
    load: Callable[[Path, dict[str, Any]], nn.Module]
    description: str


FORMATS: Registry[Format] = Registry("export format")


def example_input(meta: dict[str, Any], batch: int, seed: int = 0) -> Tensor:
    """A fixed batch of preprocessed-looking inputs (batch, C, H, W) for tracing and checks."""
    inp = meta["input"]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, inp["channels"], inp["height"], inp["width"], generator=g)


# --------------------------------------------------------------------------- safetensors


def _write_safetensors(module: nn.Module, meta: dict[str, Any], out: Path) -> dict[str, Any]:
    save_model(module, str(out), metadata={"format": "pt"})
    return {}


FORMATS.register("safetensors")(
    Format(
        ".safetensors",
        _write_safetensors,
        lambda p, m: load_safetensors_encoder(p, m),
        "weights only; rebuilt from the JSON by ssl_transfer",
    )
)


# --------------------------------------------------------------------------- torchscript


def _write_torchscript(module: nn.Module, meta: dict[str, Any], out: Path) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        traced = torch.jit.trace(module, example_input(meta, 2), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"ssl_transfer.json": json.dumps(meta)})
    return {"traced_with_batch": 2}


def _load_torchscript(path: Path, meta: dict[str, Any]) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")


FORMATS.register("torchscript")(
    Format(".pt", _write_torchscript, _load_torchscript, "traced TorchScript; runs without Python model code")
)


# --------------------------------------------------------------------------- torch.export (TorchScript's successor)


def _write_pt2(module: nn.Module, meta: dict[str, Any], out: Path) -> dict[str, Any]:
    program = torch.export.export(
        module, (example_input(meta, 2),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    torch.export.save(program, str(out), extra_files={"ssl_transfer.json": json.dumps(meta)})
    return {"dynamic_batch": True}


class ExportedProgramModule(nn.Module):
    """A loaded ExportedProgram as a module. Its graph module refuses ``train()``/``eval()`` (it is inference
    only), so it is held outside the module tree; it runs on CPU and returns on the input's device."""

    program: Any

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        object.__setattr__(self, "program", torch.export.load(str(path)).module())

    def forward(self, x: Tensor) -> Tensor:
        return self.program(x.cpu()).to(x.device)


FORMATS.register("pt2")(
    Format(
        ".pt2",
        _write_pt2,
        lambda p, m: ExportedProgramModule(p),
        "torch.export ExportedProgram (TorchScript's successor); torch.export.load(path).module()",
    )
)


# --------------------------------------------------------------------------- onnx


def _write_onnx(module: nn.Module, meta: dict[str, Any], out: Path) -> dict[str, Any]:
    x = example_input(meta, 2)
    big = sum(t.numel() * t.element_size() for t in module.state_dict().values()) > 1.5 * 2**30  # protobuf's 2 GB cap
    try:
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)

        exporter = "dynamo"
    except ImportError:
        exporter = "torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(
                module,
                (x,),
                str(out),
                dynamo=True,
                input_names=["images"],
                output_names=["embeddings"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                external_data=big,
                verbose=False,
            )
        else:
            torch.onnx.export(
                module,
                (x,),
                str(out),
                dynamo=False,
                input_names=["images"],
                output_names=["embeddings"],
                dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            )
    import onnx

    onnx.checker.check_model(str(out))
    return {"exporter": exporter, "input_name": "images", "output_name": "embeddings", "dynamic_batch": True}


class OnnxBackbone(nn.Module):
    """An ONNX file run by onnxruntime, as a module: float (B, C, H, W) -> (B, D) (on the input's device)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import onnxruntime as ort

        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
        return torch.from_numpy(out).to(x.device)


FORMATS.register("onnx")(
    Format(
        ".onnx", _write_onnx, lambda p, m: OnnxBackbone(p), "ONNX with a dynamic batch axis, checked with onnxruntime"
    )
)


# --------------------------------------------------------------------------- timm


def _timm_parts(module: nn.Module) -> tuple[nn.Module, nn.Linear | None]:
    if isinstance(module, HeadedBackbone):
        return module.backbone, module.head
    return module, None


def timm_state_dict(
    module: nn.Module,
) -> tuple[dict[str, Tensor], str, str | None, dict[str, Any], dict[str, Any]]:
    """(state dict in timm's key names, model name, classifier name, model_args, base pretrained_cfg)."""
    backbone, head = _timm_parts(module)
    model = backbone.model if isinstance(backbone, TimmBackbone) else backbone
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if not cfg.get("architecture"):
        raise ExportError(f"timm export needs a model built by timm.create_model, not {type(backbone).__name__}")
    sd = dict(model.state_dict())
    name = str(cfg["architecture"])
    if isinstance(backbone, TimmBackbone):
        args = backbone.create_args
    elif isinstance(getattr(model, "in_chans", None), int):  # our small CNNs record it
        args = {"in_chans": model.in_chans}
    else:
        raise ExportError(f"timm export: {name} was not built by ssl-transfer, its create_model arguments are unknown")
    model_args = {k: v for k, v in args.items() if k not in ("num_classes", "pretrained")}
    classifier = cfg.get("classifier")
    if head is not None:
        if not isinstance(classifier, str):
            raise ExportError(f"timm export: {name} has classifier {classifier!r}; a linear head needs exactly one")
        sd[f"{classifier}.weight"] = head.weight
        sd[f"{classifier}.bias"] = head.bias
    return {k: v.detach().contiguous() for k, v in sd.items()}, name, classifier, model_args, cfg


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _write_timm(module: nn.Module, meta: dict[str, Any], out: Path) -> dict[str, Any]:
    sd, name, classifier, model_args, base_cfg = timm_state_dict(module)
    out.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    inp = meta["input"]
    num_classes = meta["head"]["out_features"] if meta.get("head") else 0
    overlay = {
        "num_classes": num_classes,
        "input_size": [inp["channels"], inp["height"], inp["width"]],
        "mean": list(inp["mean"]),
        "std": list(inp["std"]),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        # our file is a plain state dict: no model-specific loader (timm 1.0.16 sent a ViT whose default
        # weights are Google's .npz to its npz reader whatever the file, because of this flag)
        "custom_load": False,
    }
    keep = ("first_conv", "classifier", "fixed_input_size", "pool_size", "license")
    pretrained_cfg = {**{k: base_cfg[k] for k in keep if base_cfg.get(k) is not None}, **overlay}
    config = {
        "architecture": name,
        "num_classes": num_classes,
        "num_features": int(meta["embed_dim"] if not meta.get("head") else meta["head"]["in_features"]),
        "model_args": _jsonable(model_args),
        "pretrained_cfg": _jsonable(pretrained_cfg),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return {
        "timm": {
            "model_name": name,
            "model_args": _jsonable(model_args),
            "pretrained_cfg_overlay": {"file": str((out / "model.safetensors").resolve()), **_jsonable(overlay)},
            "usage": "timm.create_model(model_name, pretrained=True, "
            "pretrained_cfg_overlay=pretrained_cfg_overlay, **model_args)"
            " or timm.create_model('local-dir:<this folder>', pretrained=True); small CNNs need `import "
            "ssl_transfer` first",
        }
    }


def _load_timm(path: Path, meta: dict[str, Any]) -> nn.Module:
    import timm

    import ssl_transfer.timm_models  # noqa: F401  (registers the small CNNs)

    return timm.create_model(f"local-dir:{path}", pretrained=True)


FORMATS.register("timm")(Format("", _write_timm, _load_timm, "a timm model folder (model.safetensors + config.json)"))


# --------------------------------------------------------------------------- export and load


@dataclass
class ExportResult:
    path: Path  # the exported file or folder
    meta_path: Path
    max_abs_diff: float
    files: list[Path] = field(default_factory=list)


def meta_path_for(fmt: str, out: Path) -> Path:
    """Where the JSON beside an export goes: ``<out>.json``, or ``<out>/encoder.json`` for folders."""
    return out / "encoder.json" if FORMATS.get(fmt).suffix == "" else out.with_suffix(".json")


def default_export_path(run_dir: str | Path, fmt: str) -> Path:
    """Where an export of ``run_dir``'s encoder goes unless told: ``<run dir>/export/encoder`` (timm: ``.../timm/``)."""
    return Path(run_dir) / "export" / ("timm" if FORMATS.get(fmt).suffix == "" else "encoder")


def output_path(fmt: str, out: str | Path) -> Path:
    f = FORMATS.get(fmt)
    out = Path(out)
    return out if f.suffix == "" else out.with_suffix(f.suffix)


def export_encoder(source: str | Path | Encoder, fmt: str, out: str | Path, *, check_images: int = 5) -> ExportResult:
    """Write ``source`` (a run dir, any exported encoder, or an :class:`Encoder`) in format ``fmt`` at ``out``,
    with its metadata JSON beside it, then load it back and check its embeddings against the live encoder
    (max abs difference over ``check_images`` random images must stay within 1e-4)."""
    if fmt not in FORMATS:
        raise ExportError(FORMATS.unknown_message(fmt))
    enc = source if isinstance(source, Encoder) else load_encoder(source)
    module = enc.backbone.cpu().eval()
    path = output_path(fmt, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_path = meta_path_for(fmt, path)
    try:
        extra = FORMATS.get(fmt).write(module, enc.meta, path)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(
            f"{fmt} export of {enc.meta['backbone']['name']} failed: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    meta = {k: v for k, v in enc.meta.items() if k not in ("export", "timm")}
    meta.update({k: v for k, v in extra.items() if k == "timm"})
    meta["export"] = {
        "format": fmt,
        "file": path.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{k: v for k, v in extra.items() if k != "timm"},
    }
    meta_path.write_text(json.dumps(meta, indent=2))

    x = example_input(enc.meta, check_images, seed=1)
    with torch.no_grad():
        want = module(x).float()
        got = load_encoder(path).backbone(x).float()
    if got.shape != want.shape:
        raise ExportError(f"{fmt} export returns {tuple(got.shape)}, the live encoder {tuple(want.shape)}")
    diff = float((got - want).abs().max())
    meta["export"]["check"] = {"images": check_images, "max_abs_diff": diff, "atol": CHECK_ATOL}
    meta_path.write_text(json.dumps(meta, indent=2))
    if not diff <= CHECK_ATOL:
        raise ExportError(
            f"{fmt} export differs from the live encoder by {diff:.3g} (> {CHECK_ATOL}); files left at {path} for "
            "inspection"
        )
    files = sorted(p for p in path.iterdir()) if path.is_dir() else [path, meta_path]
    return ExportResult(path, meta_path, diff, files)


def _format_of(p: Path) -> str | None:
    for name in FORMATS:
        suffix = FORMATS.get(name).suffix
        if suffix and p.suffix == suffix:
            return name
    return None


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> Encoder:
    """Load an encoder of any format: a run dir, ``.safetensors``, ``.pt``, ``.onnx``, a timm export folder,
    or the ``.json`` beside any of them. Returns an :class:`Encoder` (``embed_dim``, ``preprocess``, ``embed``)."""
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
            fmt, file, meta_path = "timm", p, p / "encoder.json"
        else:
            fmt, file, meta_path = "safetensors", p / "encoder.safetensors", p / "encoder.json"
    elif p.suffix == ".json":
        meta_path = p
        if not p.is_file():
            raise UserError(f"no encoder metadata at {str(p)!r}")
        export = json.loads(p.read_text()).get("export") or {}
        fmt = export.get("format", "safetensors")
        file = p.parent if FORMATS.get(fmt).suffix == "" else p.with_suffix(FORMATS.get(fmt).suffix)
    else:
        fmt = _format_of(p) or ""
        if not fmt:
            raise UserError(
                f"{str(p)!r}: not an encoder (a run dir, .safetensors, .pt, .onnx, a timm export folder, or their "
                ".json)"
            )
        file, meta_path = p, p.with_suffix(".json")
    if not file.exists() or not meta_path.is_file():
        raise UserError(f"no encoder at {str(path)!r}: need {file.name} and {meta_path.name} side by side")
    meta = json.loads(meta_path.read_text())
    return Encoder(FORMATS.get(fmt).load(file, meta), meta).to(device).eval()
