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


# cpuinfo flag -> the name users know; either gives oneDNN native bf16 dot products (AMX: tile matmuls).
_BF16_ISAS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def cpu_bf16_isa() -> str | None:
    """The native bf16 instruction set of this CPU that oneDNN uses (``"AMX-BF16"`` or ``"AVX512-BF16"``),
    or None where there is none (bf16 would then be emulated, several times slower than fp32)."""
    import torch

    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    if not torch.backends.mkldnn.is_available():
        return None
    return next((name for flag, name in _BF16_ISAS.items() if caps.get(flag)), None)


def require_cpu_bf16() -> str:
    """The CPU's native bf16 instruction set; ValueError naming what is missing where there is none."""
    isa = cpu_bf16_isa()
    if isa is None:
        raise ValueError(
            "precision 'bf16' on the CPU needs native bf16 instructions (AVX512-BF16 or AMX-BF16, used through "
            "oneDNN); this CPU has neither, and emulated bf16 is slower than fp32: use precision='fp32'")
    return isa


def default_cpu_precision() -> tuple[str, str]:
    """(the CPU default precision on this machine, why).

    bf16 where the CPU has native bf16 instructions: it is the fastest, it loses at most 0.01 dB against
    fp32 on Set5 / Set14 / B100 at x2 / x3 / x4 (measured 0.0001-0.0022 dB with the bundled model), and it
    keeps ``upscale``'s promises: tiled output equals untiled output and runs are deterministic (tested).
    fp32 elsewhere: emulated bf16 would be slower than fp32.
    """
    isa = cpu_bf16_isa()
    if isa is None:
        return "fp32", "no native bf16 on this CPU (neither AVX512-BF16 nor AMX-BF16)"
    return "bf16", f"native bf16 ({isa}): the fastest, within 0.01 dB of fp32, exact tiling kept"


def backends() -> list[Backend]:
    """The engine backends and whether each can run on this machine."""
    import torch

    has_triton = importlib.util.find_spec("triton") is not None
    cuda = torch.cuda.is_available()
    if has_triton and cuda:
        auto = "the default: per op, the fastest of the Triton kernels and cuDNN (autotuned, cached)"
    else:
        auto = "the default: means torch here (" + ("triton is not installed" if cuda else "no CUDA GPU") + ")"
    out = [Backend("auto", True, auto),
           Backend("torch", True, "runs on any device (CPU here)" if not cuda else "runs on CPU and CUDA")]
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
        "cpu bf16": cpu_bf16_isa() or "none (AVX512-BF16 / AMX-BF16 absent)",
        "cpu default precision": "{} ({})".format(*default_cpu_precision()),
        "devices": devices,
        "backends": backends(),
    }
