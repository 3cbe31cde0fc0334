"""The one module that knows about devices: placement, autocast, threads, fast-kernel switches.

Everything else receives a ``torch.device`` and calls ``autocast(...)``; on CPU the autocast is
a ``nullcontext`` (fp32), so GPU code paths need no second branch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` ('cpu', 'cuda', 'cuda:1') or CUDA when available, else CPU.

    ``WEBSSL_DEVICE`` overrides the automatic choice (tests force ``cpu``).
    """
    name = requested or os.environ.get("WEBSSL_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``dtype`` ('auto' | 'bf16' | 'fp32'); None means plain fp32.

    'auto' is bf16 on CUDA and fp32 on CPU: bf16 matmuls on CPUs without AMX run ~20x slower.
    """
    if dtype == "fp32" or (dtype == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- attention kernels --------------------------------------------------------------------
# "auto": xformers memory-efficient attention on CUDA when it imports, else PyTorch SDPA.
# "sdpa": always F.scaled_dot_product_attention. "math": the plain softmax(QK^T)V reference.
_ATTENTION_IMPL = os.environ.get("WEBSSL_ATTENTION", "auto")


def attention_impl() -> str:
    return _ATTENTION_IMPL


def set_attention_impl(impl: str) -> None:
    """Force an attention path ('auto' | 'sdpa' | 'math' | 'xformers'); tests compare them."""
    global _ATTENTION_IMPL
    if impl not in ("auto", "sdpa", "math", "xformers"):
        raise ValueError(
            f"unknown attention implementation {impl!r}; valid: auto, sdpa, math, xformers"
        )
    _ATTENTION_IMPL = impl


@contextlib.contextmanager
def attention(impl: str) -> Iterator[None]:
    previous = _ATTENTION_IMPL
    set_attention_impl(impl)
    try:
        yield
    finally:
        set_attention_impl(previous)


_XFORMERS: Any = None


def xformers_ops() -> Any:
    """``xformers.ops`` when it imports with a working CUDA extension, else None (cached)."""
    global _XFORMERS
    if _XFORMERS is None:
        try:
            import xformers.ops as xops  # type: ignore[import-not-found]

            _XFORMERS = xops
        except Exception:  # noqa: BLE001 - any import failure means "not available"
            _XFORMERS = False
    return _XFORMERS or None
