"""What this machine can run: versions, devices and backends (for ``fastsr info`` and backend defaults)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str
    available: bool
    reason: str  # why it can or cannot run here


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name``, without importing it (None when absent)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def backends() -> list[Backend]:
    """The engine backends and whether each can run on this machine."""
    import torch

    has_triton = importlib.util.find_spec("triton") is not None
    cuda = torch.cuda.is_available()
    out = [Backend("torch", True, "runs on any device (CPU here)" if not cuda else "runs on CPU and CUDA")]
    if has_triton and cuda:
        out.append(Backend("triton", True, f"CUDA device: {torch.cuda.get_device_name(0)}"))
    else:
        out.append(Backend("triton", False, "needs a CUDA GPU" if has_triton else "triton is not installed"))
    out.append(Backend("interpret", has_triton,
                       "Triton kernels under TRITON_INTERPRET=1 (slow; for tests)" if has_triton
                       else "triton is not installed"))
    return out


def info() -> dict[str, object]:
    """Versions, devices and backends, as plain data."""
    import torch

    from ._version import __version__

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return {
        "fastsr": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": package_version("triton") or "not installed",
        "cuda": torch.version.cuda or "none (CPU build)",
        "cpu threads": torch.get_num_threads(),
        "devices": devices,
        "backends": backends(),
    }
