"""Where and in which precision the book computes: device choice and numeric precision,
shared by training, evaluation and timing.

Precision (every chapter's ``precision`` parameter):

- ``"auto"``: on CUDA, mixed precision (fp16 autocast with gradient scaling); on a CPU with
  native bf16 arithmetic (AVX-512 BF16 or AMX), bf16 autocast; elsewhere fp32 (emulated
  bf16 is slower than fp32).
- ``"fp32"``: no autocast.
- ``"bf16"``: bf16 autocast on any device that supports it.

Under autocast only the model's forward pass runs in reduced precision; losses, metrics and
optimizer updates stay in fp32. Convolutional models also run with channels-last tensors,
which PyTorch's CPU and CUDA convolution kernels prefer.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to torch."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively (a CPU with AVX-512 BF16 or AMX tiles, or
    a CUDA GPU that supports bf16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` is ``"fp32"``, ``"bf16"`` or ``"fp16-amp"``; ``dtype``
    the autocast type (None: no autocast)."""

    name: str
    device_type: str
    dtype: torch.dtype | None = None

    @property
    def scaled(self) -> bool:
        """fp16 needs gradient scaling; bf16 has fp32's exponent range and does not."""
        return self.dtype == torch.float16

    def autocast(self) -> torch.autocast:
        """The autocast context of the forward pass (a no-op for fp32)."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """The precision ``"auto"``, ``"fp32"`` or ``"bf16"`` means on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kind = device.type
    if precision == "fp32" or kind not in ("cpu", "cuda"):
        if precision == "bf16":
            raise ValueError(f"precision 'bf16' is not supported on {kind}; use 'fp32' or "
                             f"'auto'")
        return Precision("fp32", kind)
    if precision == "bf16" or (kind == "cpu" and native_bf16(device)):
        if kind == "cuda" and not native_bf16(device):
            raise ValueError("precision 'bf16' needs a GPU with bf16 support; use 'auto' "
                             "(fp16 mixed precision) or 'fp32'")
        return Precision("bf16", kind, torch.bfloat16)
    if kind == "cuda":
        return Precision("fp16-amp", kind, torch.float16)
    return Precision("fp32", kind)


def computed_precision(precision: str, device: str | torch.device = "auto") -> str:
    """The name of the precision ``precision`` resolves to on ``device`` here (``"fp32"``,
    ``"bf16"`` or ``"fp16-amp"``): what a stored result depends on, where the device itself
    does not enter its key."""
    return resolve_precision(precision, resolve_device(device)).name


def is_convolutional(model: nn.Module) -> bool:
    """Whether ``model`` holds 2-d convolutions (and so prefers channels-last tensors)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-d batch in channels-last layout when asked; anything else unchanged."""
    if channels_last and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Hold a convolutional ``model``'s weights in channels-last layout for the block, then
    restore the default layout (so weights can be viewed, fused and saved as usual). Yields
    whether inputs should be channels-last too."""
    active = enabled and is_convolutional(model)
    if active:
        model.to(memory_format=torch.channels_last)
    try:
        yield active
    finally:
        if active:
            model.to(memory_format=torch.contiguous_format)
