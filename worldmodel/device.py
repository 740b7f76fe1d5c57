"""Pick a torch device from a user string; nothing else in the package hard-codes CUDA."""

from __future__ import annotations

import re

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Map ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` to an available ``torch.device``.

    ``"auto"`` picks CUDA, then MPS, then the CPU. Asking for a device that is not
    available raises ``ValueError`` saying what is available instead.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise ValueError(f"device must be a string like 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps', got {name!r}")
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ValueError("device 'mps' was requested but MPS is not available; use --device cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match:
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use --device cpu or auto"
            )
        index = int(match.group(1) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"device {name!r} was requested but only {count} CUDA device(s) exist (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index) if match.group(1) else torch.device("cuda")
    raise ValueError(f"unknown device {name!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest mmap threshold glibc accepts on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``)
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_allocator_tuned: bool | None = None


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (oneDNN's AVX-512 / AVX-512 BF16 / AMX
    paths). Without them (an AVX2-only CPU) PyTorch emulates bf16 products, measured ~100x slower
    than float32: 0.56 against 58.8 GFLOP/s for a 1024^3 product on one core of an AVX2 AMD EPYC.
    """
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        if check is not None:
            return bool(check())
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    except (RuntimeError, AttributeError):
        return False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks up to 32 MB for reuse instead of returning them to the OS.

    A CPU training step allocates and frees the same activation buffers (MB each) every step.
    With glibc's defaults a block above its (adaptive) mmap threshold is mapped anew at each
    allocation and unmapped at each free, so every step pays the page faults of zeroing fresh
    pages on first touch (measured: 13 % of a ``lewm-tiny`` training step on one core,
    ``wm bench train``). Fixing the mmap threshold at its maximum and raising the trim
    threshold keeps those blocks in the heap. Process-wide and idempotent; a no-op (False)
    where the C library is not glibc. Returns True if the setting is in effect.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        try:
            import ctypes
            import platform

            if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
                libc = ctypes.CDLL("libc.so.6")
                _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
        except (OSError, AttributeError):
            _allocator_tuned = False
    return _allocator_tuned
