"""Reading a checkpoint into a :class:`Raw`: what a file (or a state dict passed directly) holds, before any
format is decided.

Nothing here runs pickled code: torch files are read with ``weights_only=True``, safetensors by its own
reader, and a zip-format torch file whose entries expand beyond the file's size is refused. OpenCV's ``.pb``
files are not read here: their format module reads them (:mod:`fastsr.sources.opencv_pb`).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import MAX_DETAIL_CHARS, CheckpointError, first_line

# Keys under which training frameworks nest the weights, in order of preference (BasicSR keeps the EMA
# weights under params_ema; those are the ones it evaluates with).
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model")


@dataclass(eq=False)
class Raw:
    """A checkpoint as read: ``obj`` is the file's object (a mapping for torch and safetensors files; ``None``
    for a file only its format module reads, such as ``.pb``), ``metadata`` the safetensors header's metadata,
    ``path`` the file (``None`` for a state dict passed directly)."""

    obj: Any
    metadata: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "a state dict"

    @cached_property
    def state(self) -> dict[str, torch.Tensor]:
        """The plain state dict inside ``obj`` (under a known container key, "module." prefixes removed),
        every entry checked by :func:`check_tensors`. CheckpointError for anything else."""
        return check_tensors(plain_state(self.obj))


def plain_state(obj: Any) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping in ``obj`` (bare, or under one of :data:`CONTAINER_KEYS`)."""
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    return string_keyed_tensors(obj)


def string_keyed_tensors(obj: Any) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    if not obj:
        raise CheckpointError("the checkpoint holds an empty state dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"state dict keys must be strings, got {key!r}")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key] = value
    # nn.DataParallel / DistributedDataParallel prefix every key with "module.".
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read(source: str | os.PathLike | Mapping[str, Any]) -> Raw:
    """The :class:`Raw` of a path or of a state dict (or container dict) passed directly.

    Raises FileNotFoundError for a missing path and :class:`CheckpointError` for a file that cannot be read.
    """
    if isinstance(source, Mapping):
        return Raw(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a path or a state dict, got {type(source).__name__}")
    path = Path(source)
    if path.suffix.lower() == ".pb":
        if not path.exists():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return Raw(None, {}, path)  # a TensorFlow graph: read by its format module
    obj, metadata = read_file(path)
    return Raw(obj, metadata, path)


def read_file(path: str | os.PathLike) -> tuple[Any, dict[str, str]]:
    """(the object a torch or safetensors file holds, its safetensors metadata or ``{}``)."""
    return _read_torch_or_safetensors(Path(path))


def _is_safetensors(path: Path) -> bool:
    if path.suffix.lower() == ".safetensors":
        return True
    # safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'.
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") < path.stat().st_size


def _check_zip_sizes(path: Path) -> None:
    """Refuse a zip-format torch file whose entries expand beyond the file's own size.

    ``torch.save`` stores entries uncompressed, so a real checkpoint's data is never larger than the file;
    torch's reader would still inflate deflated entries (up to ~1000x), a zip bomb. Archives Python's zipfile
    cannot parse are left to torch, which refuses them.
    """
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            expanded = sum(max(0, info.file_size) for info in archive.infolist())
    except Exception:  # noqa: BLE001 - zipfile raises BadZipFile, NotImplementedError, ... on damaged archives
        return
    size = path.stat().st_size
    if expanded > size:
        raise CheckpointError(f"cannot read {path}: its zip entries expand to {expanded:,} bytes from a file of "
                              f"{size:,} (torch.save never compresses; refusing a possible zip bomb)")


def _read_torch_or_safetensors(path: Path) -> tuple[Any, dict[str, str]]:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if _is_safetensors(path):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot read {path} as safetensors: {first_line(e)}") from e
        return tensors, metadata
    _check_zip_sizes(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a long advert for weights_only=False; the cause follows "WeightsUnpickler error:".
        found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
        detail = found.group(1).strip()[:MAX_DETAIL_CHARS] if found else first_line(e)
        if "global" in detail.lower():
            raise CheckpointError(
                f"cannot read {path}: the pickle references code ({detail}). fastsr loads checkpoints with "
                "weights_only=True and never runs code stored in a pickle; re-save the state dict "
                "(model.state_dict()) or use safetensors"
            ) from e
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint (corrupt or not a checkpoint): {detail}") from e
    except Exception as e:  # torch raises RuntimeError, EOFError, ValueError, ... for corrupt files
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint (truncated or not a checkpoint?): {first_line(e)}"
        ) from e
    return obj, {}



# Weight dtypes a network can take (cast to fp32 on load); num_batches_tracked (BatchNorm) is an integer.
_WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Refuse, naming the key, every tensor that is not plain data the network can hold: meta (no data),
    sparse or other non-strided layouts, quantized, tensor subclasses, devices other than CPU and CUDA, dtypes
    other than fp32 / fp16 / bf16 / fp64 (float8, complex, integers; ``num_batches_tracked`` may be an integer).
    Runs before anything reads a value, so torch never gets to raise its own error. CUDA tensors (a state dict
    passed directly) are copied to the CPU."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if type(value) not in (torch.Tensor, nn.Parameter):
            raise CheckpointError(f"{key!r} is a {type(value).__name__}, not a plain tensor")
        if value.device.type == "meta":
            raise CheckpointError(f"{key!r} is a meta tensor: it has a shape but no values")
        if value.device.type not in ("cpu", "cuda"):
            raise CheckpointError(f"{key!r} is on device {value.device}; weights must be on the CPU (or CUDA)")
        if value.layout != torch.strided:
            raise CheckpointError(f"{key!r} has layout {value.layout}; weights must be dense (torch.strided)")
        if value.is_quantized:
            raise CheckpointError(f"{key!r} is a quantized tensor ({value.dtype}); weights must be floating point")
        integer_ok = key.endswith("num_batches_tracked") and not value.is_floating_point() and not value.is_complex()
        if value.dtype not in _WEIGHT_DTYPES and not (integer_ok and value.dtype != torch.bool):
            raise CheckpointError(f"{key!r} has dtype {value.dtype}; weights must be float32, float16, bfloat16 "
                                  "or float64")
        out[key] = value.detach().cpu() if value.device.type == "cuda" else value
    return out
