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
