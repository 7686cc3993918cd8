"""Speed settings of a pretraining run: precision per device, channels_last, torch.compile.

Each is a recipe switch in ``trainer``; none changes what is learnt beyond floating-point rounding
(losses always run in float32, see :func:`ssl_transfer.methods.base.in_fp32`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import nn


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16), where oneDNN's bf16 convolutions
    and matmuls beat float32; elsewhere bf16 is emulated and slower. Reads /proc/cpuinfo (Linux); False elsewhere."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return (" avx512_bf16" in flags or " amx_bf16" in flags) and torch.backends.mkldnn.is_available()


def auto_precision(accelerator: str) -> str:
    """Lightning precision for ``trainer.precision: auto``: bf16-mixed on GPUs and on CPUs with native bf16."""
    if accelerator == "gpu" or (accelerator == "cpu" and cpu_has_native_bf16()):
        return "bf16-mixed"
    return "32-true"


def to_channels_last(module: nn.Module) -> nn.Module:
    """4-D parameters and buffers (conv weights) of ``module`` to channels_last, in place."""
    return module.to(memory_format=torch.channels_last)


def to_contiguous(module: nn.Module) -> nn.Module:
    """Back to the default memory format (for saving: safetensors wants contiguous tensors), in place."""
    return module.to(memory_format=torch.contiguous_format)


def compile_children(module: nn.Module, **compile_kwargs) -> list[str]:
    """``torch.compile`` each direct child of ``module`` that has parameters (encoder, heads, momentum copies),
    in place with ``nn.Module.compile`` so that state-dict keys do not change. Returns the compiled names."""
    names = []
    for name, child in module.named_children():
        if any(True for _ in child.parameters()):
            child.compile(**compile_kwargs)
            names.append(name)
    return names


def uncompile(module: nn.Module) -> nn.Module:
    """Drop what :func:`compile_children` set (exporters trace the plain modules), in place."""
    for m in module.modules():
        m._compiled_call_impl = None
    return module
