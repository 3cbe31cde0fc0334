"""The one module that knows about devices: placement, autocast, threads, fast-kernel switches.

Training, evaluation and the filter classifiers receive a ``torch.device`` from
``pick_device()`` and wrap compute in ``autocast(device, autocast_dtype(device))``; on CPU the
autocast is a ``nullcontext`` (fp32), so GPU code paths need no second branch.

The automatic choice is CUDA with bf16 autocast when a GPU is visible, else the CPU in fp32.
A cluster profile overrides it for its jobs (``device:``/``dtype:``), which reach the job as
the environment variables ``WEBSSL_DEVICE`` (auto | cpu | cuda | cuda:N) and ``WEBSSL_DTYPE``
(auto | bf16 | fp32). torch is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from webssl_cli.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "WEBSSL_DEVICE"
DTYPE_ENV = "WEBSSL_DTYPE"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bf16", "fp32")
_DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def check_device_name(name: str, where: str = DEVICE_ENV) -> str:
    """``name`` when it is auto, cpu, cuda or cuda:N; else a UserError naming ``where``."""
    if not _DEVICE_NAME.match(name):
        raise UserError(f"{where}: unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return name


def check_dtype_name(name: str, where: str = DTYPE_ENV) -> str:
    if name not in DTYPES:
        raise UserError(f"{where}: unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    return name


def device_name(requested: str | None = None) -> str:
    """The device asked for: ``requested``, else ``$WEBSSL_DEVICE``, else 'auto' (validated)."""
    if requested and requested != "auto":
        return check_device_name(requested, "device")
    env = os.environ.get(DEVICE_ENV, "").strip()
    return check_device_name(env) if env else "auto"


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` ('cpu', 'cuda', 'cuda:1'), else ``$WEBSSL_DEVICE``, else CUDA when a GPU
    is visible and the CPU otherwise. Asking for CUDA without a GPU is a UserError."""
    import torch

    name = device_name(requested)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        source = "device" if requested and requested != "auto" else DEVICE_ENV
        raise UserError(
            f"{source}: {name!r} asked for but no CUDA device is visible; use cpu or auto "
            "(profile field `device`)"
        )
    return torch.device(name)


def dtype_name(requested: str | None = None) -> str:
    """The precision asked for: ``requested`` unless 'auto', else ``$WEBSSL_DTYPE``, else 'auto'."""
    if requested and requested != "auto":
        return check_dtype_name(requested, "dtype")
    env = os.environ.get(DTYPE_ENV, "").strip()
    return check_dtype_name(env) if env else "auto"


def autocast_dtype(device: torch.device, dtype: str | None = "auto") -> torch.dtype | None:
    """The autocast dtype for ``dtype`` ('auto' | 'bf16' | 'fp32'); None means plain fp32.

    A configured 'bf16'/'fp32' wins; 'auto' defers to ``$WEBSSL_DTYPE``, then to the device:
    bf16 on CUDA and fp32 on CPU (bf16 matmuls on CPUs without AMX run ~20x slower).
    """
    import torch

    name = dtype_name(dtype)
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

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
