"""Numeric precision of a step: the names a user gives (`--precision`), what `auto` resolves to on a device, and the
autocast dtype. The losses (sassl.learners.losses.float32), normalisations, BatchNorm statistics, the EMA and the
optimiser state stay float32 whatever is chosen: autocast lowers the convolutions and matrix products only."""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU flags of native bf16 dot products (Zen 4+, Sapphire Rapids+)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux: /proc/cpuinfo); empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products natively. NOTE: torch's own mkldnn check
    (torch.backends.mkldnn.is_bf16_supported) also says yes on AVX-512 CPUs without them, where bf16 is
    emulated and slower than float32."""
    return any(f in cpu_flags() for f in NATIVE_BF16_FLAGS)


def check_precision(precision: str) -> None:
    """ValueError naming the setting unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32, bf16 or fp16 for `precision` on `device`. auto: bf16 on CUDA from compute capability 8.0 (Ampere's
    bf16 tensor cores), fp16 below (with a GradScaler; torch.cuda.is_bf16_supported also counts the emulated bf16
    of V100 and T4); fp32 on the CPU. NOTE: auto stays fp32 on the CPU, native bf16 or not: the paired study at the
    main job's budget saw no difference, but its linear-probe interval is ten points wide (docs/pretraining.md);
    ask for bf16 by name.
    fp16 on the CPU is refused; bf16 on a CPU without native bf16 warns that it is emulated."""
    check_precision(precision)
    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
        return precision
    if precision == "fp16":
        raise ValueError("precision: fp16 needs a GPU (on the CPU use bf16, or fp32)")
    if precision == "bf16" and not cpu_native_bf16():
        warnings.warn("precision bf16: this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag); it is "
                      "emulated and slower than fp32 here", stacklevel=2)
    return "fp32" if precision == "auto" else precision


def autocast_dtype(resolved: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: float32, autocast off)."""
    return DTYPES[resolved]


class Autocast(nn.Module):
    """`module`'s forward under autocast to `dtype`, its output returned as float32: what evaluation runs a frozen
    or fine-tuned encoder through, so that the probes, kNN votes and losses that read its output stay float32.
    The wrapped module keeps its float32 weights (`module`); forward hooks on its submodules still fire."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.module(x).float()


def with_precision(module: nn.Module, resolved: str) -> nn.Module:
    """`module` itself for fp32, else wrapped in Autocast to the resolved precision's dtype."""
    dtype = autocast_dtype(resolved)
    return module if dtype is None else Autocast(module, dtype)


def unwrapped(module: nn.Module) -> nn.Module:
    """The module inside an Autocast wrapper (the module itself otherwise)."""
    return module.module if isinstance(module, Autocast) else module


__all__ = ["PRECISIONS", "Autocast", "autocast_dtype", "check_precision", "cpu_flags", "cpu_native_bf16",
           "resolve_precision", "unwrapped", "with_precision"]
