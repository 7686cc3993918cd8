"""Speed settings of a pretraining run: precision per device, channels_last, torch.compile.

Each is a recipe switch in ``trainer``; none changes what is learnt beyond floating-point rounding
(losses always run in float32, see :func:`ssl_transfer.methods.base.in_fp32`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


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


def cpu_bf16_hazards(model: nn.Module, run: Callable[[nn.Module], Any]) -> list[str]:
    """Trainable convolutions of ``model`` whose weight gradient oneDNN gets wrong under CPU bf16 autocast.

    On torch 2.14's oneDNN the bf16 weight gradient of a padded convolution whose input is narrower than its
    stride (transposed: whose output is) is read from uninitialised memory: values up to 1e38 or inf, or
    finite and wrong, differing from run to run. The rule was mapped over kernel 1-7, stride 1-5, every
    padding and widths 1-11 (only the width was seen to fail; both spatial sizes are checked); a timm ResNet
    at 16 px meets it in layer 4 (1-pixel input, stride 2). ``run(m)`` drives one forward pass of a copy of
    ``model`` (e.g. a training step on a zero batch) while hooks record each convolution's shapes; the copy
    runs in eval mode without gradients on a forked RNG, so ``model`` and the random streams stay untouched.
    Returns ``'name (input 1 px, stride 2, padding 1)'`` entries; empty when bf16 is safe.
    """
    probe = copy.deepcopy(model).eval()
    found: dict[str, str] = {}

    def check(name: str):
        def hook(m: nn.modules.conv._ConvNd, args: tuple[Tensor, ...], out: Tensor) -> None:
            if not m.weight.requires_grad or isinstance(m.padding, str):
                return
            wide = out.shape[2:] if m.transposed else args[0].shape[2:]
            for size, stride, pad in zip(wide, m.stride, m.padding):
                if pad > 0 and size < stride:
                    found[name] = (
                        f"{name} ({'output' if m.transposed else 'input'} {size} px, stride {stride}, padding {pad})"
                    )

        return hook

    for name, m in probe.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            m.register_forward_hook(check(name))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        run(probe)
    return list(found.values())


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
