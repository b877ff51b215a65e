"""Checkpoint loading and saving.

:func:`load` reads, without ever executing pickled code (``torch.load(weights_only=True)`` or safetensors):

* official EDSR-PyTorch files (plain state dicts: ``edsr_baseline_x2-1bc95232.pt``, ``mdsr-*.pt``, ...),
  including the legacy (pre-1.6, non-zip) serialization they were published in;
* BasicSR EDSR files (``conv_first``, ``body.{i}.conv1/conv2``, ``conv_after_body``, ``upsample.*``,
  ``conv_last``), bare or nested under ``params_ema`` (preferred) or ``params``. BasicSR's module maps
  [0, 1] to [0, 1] with ``(x - mean) * 255`` inside; the loaded fastsr module maps ``255 * x`` to
  ``255 * basicsr(x)`` with the same weights and DIV2K mean;
* fastsr's own files (:func:`save`), which carry their config;
* a state dict passed directly.

The architecture (EDSR / MDSR / batch-norm baseline), depth, width, scale(s) and colours are inferred from
key names and shapes. ``res_scale`` is in no checkpoint: it defaults to 0.1 for 256 features (the official
EDSR) and 1.0 otherwise, and can be overridden. The inferred network must then match the checkpoint key for
key and shape for shape -- anything missing, unexpected or mis-shaped raises one :class:`CheckpointError`
that names it (unlike the official loader, which silently skips mismatched tail weights).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._errors import MAX_DETAIL_CHARS, CheckpointError, first_line
from ._files import atomic_write
from ._version import __version__
from .models.config import (
    EDSRConfig,
    MDSRConfig,
    config_from_dict,
    config_from_name,
    preset_names,
)
from .models.networks import EDSR, MDSR, build

__all__ = ["CheckpointError", "load", "save", "read_state_dict", "read_info", "infer_config"]

log = logging.getLogger(__name__)

FORMAT_TAG = "fastsr"
FORMAT_VERSION = 1
TRAIN_FORMAT_TAG = "fastsr-train"  # fastsr.train's resumable checkpoints (weights under "model")
# Keys under which training frameworks nest the weights, in order of preference (BasicSR keeps the EMA
# weights under params_ema; those are the ones it evaluates with).
_CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model")
_ARCHS = ("edsr", "edsr-bn", "mdsr")
_MAX_LISTED = 12  # keys listed per category in an error message


# --------------------------------------------------------------------------------------------- reading


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


def _read_file(path: Path) -> tuple[Any, dict[str, str]]:
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


def _unwrap(obj: Any, metadata: Mapping[str, str]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, str]:
    """(state dict, carried config dict or None, description of the container)."""
    config = None
    where = "state dict"
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT_TAG:
        config = obj.get("config")
        obj = obj.get("state_dict")
        where = "fastsr checkpoint"
    elif isinstance(obj, Mapping) and obj.get("format") == TRAIN_FORMAT_TAG:
        config = obj.get("config")
        obj = obj.get("model")
        where = "fastsr training checkpoint"
    elif metadata.get("format") == FORMAT_TAG and "config" in metadata:
        try:
            config = json.loads(metadata["config"])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"fastsr safetensors metadata has an unreadable config: {e}") from e
        where = "fastsr safetensors checkpoint"
    elif isinstance(obj, Mapping):
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                where = f"state dict under {key!r}"
                break
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
    if config is not None and not isinstance(config, dict):
        raise CheckpointError(f"fastsr checkpoint config must be a dict, got {type(config).__name__}")
    return state, config, where


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The raw state dict of a checkpoint file or object, and its fastsr config dict if it carries one.

    Raises FileNotFoundError for a missing path and :class:`CheckpointError` for anything unreadable.
    """
    if isinstance(source, Mapping):
        obj, metadata = source, {}
    elif isinstance(source, (str, os.PathLike)):
        obj, metadata = _read_file(Path(source))
    else:
        raise TypeError(f"expected a path or a state dict, got {type(source).__name__}")
    state, config, _ = _unwrap(obj, metadata)
    return state, config


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``info`` dict a fastsr checkpoint was saved with (see :func:`save`); ``{}`` when it has none or is
    not a fastsr file.

    Raises FileNotFoundError for a missing path and :class:`CheckpointError` for an unreadable file.
    """
    obj, metadata = _read_file(Path(path))
    if metadata.get("format") == FORMAT_TAG:
        text = metadata.get("info")
    elif isinstance(obj, Mapping) and obj.get("format") == FORMAT_TAG:
        text = obj.get("info")
    else:
        return {}  # not a fastsr file: an "info" entry there is some other framework's
    if text is None:
        return {}
    try:
        info = json.loads(text)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable info ({first_line(e)})") from e
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: info must be a JSON object, got {type(info).__name__}")
    return info


# ------------------------------------------------------------------------------------- layout detection

_BASICSR_RULES = [
    (re.compile(r"^conv_first\.(.+)$"), r"head.0.\1"),
    (re.compile(r"^body\.(\d+)\.conv1\.(.+)$"), r"body.\1.body.0.\2"),
    (re.compile(r"^body\.(\d+)\.conv2\.(.+)$"), r"body.\1.body.2.\2"),
    (re.compile(r"^upsample\.(\d+)\.(.+)$"), r"tail.0.\1.\2"),
    (re.compile(r"^conv_last\.(.+)$"), r"tail.1.\1"),
]


def _from_basicsr(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n_blocks = _count_indexed(state, "body.{}.conv1.weight")
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith("conv_after_body."):
            new = f"body.{n_blocks}." + key[len("conv_after_body."):]
        else:
            for pattern, repl in _BASICSR_RULES:
                if pattern.match(key):
                    new = pattern.sub(repl, key)
                    break
        out[new] = value
    return out


def _count_indexed(state: Mapping[str, Any], template: str) -> int:
    n = 0
    while template.format(n) in state:
        n += 1
    return n


def _detect(state: Mapping[str, torch.Tensor]) -> str:
    if "conv_first.weight" in state:
        return "basicsr"
    if any(k.startswith(("pre_process.", "upsample.")) for k in state) and "tail.0.weight" in state:
        return "mdsr"
    if "head.0.weight" in state and "body.0.body.0.weight" in state:
        if "body.0.body.1.running_mean" in state or "body.0.body.1.weight" in state:
            return "edsr-bn"
        return "edsr"
    listed = ", ".join(repr(k) for k in list(state)[:_MAX_LISTED])
    raise CheckpointError(
        "the state dict matches no known layout (EDSR-PyTorch EDSR / MDSR / batch-norm baseline, BasicSR "
        f"EDSR, fastsr): expected keys such as 'head.0.weight' or 'conv_first.weight'; it has {len(state)} "
        f"keys: {listed}{', ...' if len(state) > _MAX_LISTED else ''}"
    )


def _conv_shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"missing key {key!r}, which the layout needs to infer the network")
    shape = tuple(state[key].shape)
    if len(shape) != 4:
        raise CheckpointError(f"{key!r} should be a 4-D conv weight, got shape {shape}")
    return shape


def _upsampler_scale(state: Mapping[str, torch.Tensor], prefix: str, n_feats: int) -> int:
    """Scale of the upsampler whose convs are ``{prefix}.0``, ``{prefix}.2``, ... (4F -> x2, 9F -> x3).

    EDSR's conv-shuffle tail (OpenCV's zoo files, see fastsr.tf_graph) has instead one conv ``tail.0``,
    F -> colours x s^2, and one pixel shuffle by s."""
    if prefix == "tail.0" and f"{prefix}.weight" in state and f"{prefix}.0.weight" not in state:
        out_channels, in_channels = _conv_shape(state, f"{prefix}.weight")[:2]
        n_colors = _conv_shape(state, "head.0.weight")[1]
        s = math.isqrt(out_channels // n_colors) if out_channels % n_colors == 0 else 0
        if in_channels != n_feats or s < 2 or s * s * n_colors != out_channels:
            raise CheckpointError(
                f"{prefix}.weight has shape {tuple(state[prefix + '.weight'].shape)}; a conv-shuffle tail conv "
                f"maps {n_feats} features to {n_colors} colours x scale^2 (e.g. {n_colors * 16} for x4)"
            )
        return s
    scale, j = 1, 0
    while f"{prefix}.{j}.weight" in state:
        out_channels = _conv_shape(state, f"{prefix}.{j}.weight")[0]
        if out_channels not in (4 * n_feats, 9 * n_feats):
            raise CheckpointError(
                f"{prefix}.{j}.weight has {out_channels} output channels; an upsampler conv has "
                f"4 x {n_feats} (x2) or 9 x {n_feats} (x3)"
            )
        scale *= 2 if out_channels == 4 * n_feats else 3
        j += 2
    if j == 0:
        raise CheckpointError(f"missing key {prefix + '.0.weight'!r}: the checkpoint has no upsampler")
    return scale


def _colour_stats(state: Mapping[str, torch.Tensor], rgb_range: float, n_colors: int) -> dict[str, Any]:
    """rgb_mean / rgb_std read back from ``sub_mean`` (weight 1/std, bias -rgb_range * mean / std)."""
    w, b = state.get("sub_mean.weight"), state.get("sub_mean.bias")
    if w is None or b is None or tuple(w.shape) != (n_colors, n_colors, 1, 1) or tuple(b.shape) != (n_colors,):
        return {}
    w = w.double().reshape(n_colors, n_colors)
    diag = torch.diagonal(w)
    if not bool(torch.all(diag > 0)) or not torch.equal(w, torch.diag(diag)):
        return {}  # not a MeanShift; the weights still load, the config keeps its defaults
    std = 1.0 / diag
    mean = -b.double() * std / rgb_range
    stats: dict[str, Any] = {}
    defaults = EDSRConfig()
    for name, values, default in (("rgb_mean", mean, defaults.rgb_mean), ("rgb_std", std, defaults.rgb_std)):
        values_t = tuple(float(v) for v in values)
        # Values stored in fp32 (or fp16) come back within float rounding of the constants they were made
        # from: keep the exact default when they are within that rounding of it.
        if len(values_t) == len(default) and all(math.isclose(v, d, rel_tol=1e-3, abs_tol=1e-4) for v, d in zip(values_t, default)):
            continue
        stats[name] = values_t
    return stats


def _structure(state: Mapping[str, torch.Tensor], layout: str) -> dict[str, Any]:
    """The sizes that decide what a network allocates -- width, colours, depth, scales -- read from the shapes
    and key names of the tensors in ``state`` (official key layout; ``layout`` from :func:`_detect`)."""
    n_feats, n_colors = _conv_shape(state, "head.0.weight")[:2]
    n_resblocks = _count_indexed(state, "body.{}.body.0.weight")
    if n_resblocks == 0:
        raise CheckpointError("missing key 'body.0.body.0.weight': the checkpoint has no residual blocks")
    if layout == "mdsr":
        n_branches = _count_indexed(state, "upsample.{}.0.weight")
        scales = tuple(_upsampler_scale(state, f"upsample.{k}", n_feats) for k in range(n_branches))
    else:
        scales = (_upsampler_scale(state, "tail.0", n_feats),)
    return {"arch": layout, "n_feats": n_feats, "n_colors": n_colors, "n_resblocks": n_resblocks, "scales": scales}


def _check_structure(config: EDSRConfig | MDSRConfig, structure: Mapping[str, Any], claimed_by: str) -> None:
    """CheckpointError unless ``config`` (a file's stored config, or overrides) has the sizes the tensors have.

    Runs before any network is built: a config that claims more blocks, features, colours or scales than
    the tensors hold would otherwise make :func:`load` allocate (and initialise) a network of the claimed
    size -- gigabytes from a file of kilobytes -- before the tensors could contradict it.
    """
    claimed = {"arch": config.arch, "n_feats": config.n_feats, "n_colors": config.n_colors,
               "n_resblocks": config.n_resblocks, "scales": tuple(config.scales)}
    wrong = [f"{name}={claimed[name]!r} (the tensors have {structure[name]!r})"
             for name in ("arch", "n_feats", "n_colors", "n_resblocks", "scales") if claimed[name] != structure[name]]
    if wrong:
        raise CheckpointError(f"{claimed_by} does not match the tensors in the checkpoint: " + ", ".join(wrong))


def infer_config(state: Mapping[str, torch.Tensor], *, arch: str | None = None, **overrides: Any) -> EDSRConfig | MDSRConfig:
    """The config of the network a state dict (official / BasicSR / fastsr key layout) belongs to.

    ``arch`` may be ``"edsr"``, ``"edsr-bn"``, ``"mdsr"`` (checked against the detected layout) or a preset
    name (its config is used as the base instead of inference). ``overrides`` replace config fields.
    """
    layout = _detect(state)
    if layout == "basicsr":
        state = _from_basicsr(dict(state))
        layout = "edsr"
    if arch is not None and arch not in _ARCHS:
        if arch not in preset_names():
            raise ValueError(f"arch must be one of {_ARCHS} or a preset name ({', '.join(preset_names())}), got {arch!r}")
        config = config_from_name(arch)
        if config.arch != layout:
            raise CheckpointError(f"arch={arch!r} is a {config.arch} preset but the checkpoint is a {layout}")
        return config.replace(**overrides) if overrides else config
    if arch is not None and arch != layout:
        raise CheckpointError(f"arch={arch!r} was requested but the checkpoint's keys are those of a {layout}")

    structure = _structure(state, layout)
    n_feats, n_colors = structure["n_feats"], structure["n_colors"]
    fields: dict[str, Any] = dict(n_feats=n_feats, n_colors=n_colors, n_resblocks=structure["n_resblocks"])
    fields.update(_colour_stats(state, float(overrides.get("rgb_range", 255.0)), n_colors))
    if n_colors != 3 and "rgb_mean" not in fields and "rgb_mean" not in overrides:
        raise CheckpointError(
            f"the checkpoint has {n_colors} colour channels and no MeanShift to read the mean from; pass "
            "rgb_mean=(...) and rgb_std=(...) with one entry per channel"
        )
    try:
        if layout == "mdsr":
            config: EDSRConfig | MDSRConfig = MDSRConfig(scales=structure["scales"], **fields)
        else:
            # The paper's wide EDSR (256 features) uses residual scaling 0.1; the baseline uses none.
            res_scale = 0.1 if n_feats == 256 else 1.0
            if "tail.0.weight" in state and "tail.0.0.weight" not in state:
                fields["tail"] = "conv-shuffle"  # OpenCV's EDSR files (fastsr.tf_graph)
            config = EDSRConfig(scale=structure["scales"][0], res_scale=res_scale, batch_norm=layout == "edsr-bn",
                                **fields)
        return config.replace(**overrides) if overrides else config
    except (TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"the checkpoint describes an invalid network: {e}") from e


# ---------------------------------------------------------------------------------------------- loading


def _describe(config: EDSRConfig | MDSRConfig) -> str:
    scales = f"x{config.scale}" if isinstance(config, EDSRConfig) else "scales " + "/".join(f"x{s}" for s in config.scales)
    return f"{config.arch} ({config.n_resblocks} blocks, {config.n_feats} features, {scales})"


def _check_against(model: nn.Module, state: Mapping[str, torch.Tensor], config: EDSRConfig | MDSRConfig,
                   optional: set[str]) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    def listing(items: list[str]) -> str:
        more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
        return ", ".join(items[:_MAX_LISTED]) + more

    parts = [f"the checkpoint does not match the inferred network {_describe(config)}:"]
    if missing:
        parts.append(f"missing keys: {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {listing(unexpected)}")
    if mismatched:
        parts.append("shape mismatches (checkpoint vs network): "
                     + listing([f"{k} {got} vs {want}" for k, got, want in mismatched]))
    raise CheckpointError("\n  ".join(parts))


# Weight dtypes a network can take (cast to fp32 on load); num_batches_tracked (BatchNorm) is an integer.
_WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


def _check_values(state: Mapping[str, torch.Tensor]) -> None:
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{key!r} contains NaN or infinite values")


def load(source: str | os.PathLike | Mapping[str, Any], *, arch: str | None = None, **overrides: Any) -> EDSR | MDSR:
    """A reference network (eval mode, fp32, CPU) with the weights of ``source``.

    ``source`` is a path (``.pt``, ``.pth``, ``.safetensors``; ``.pb``: OpenCV dnn_superres's EDSR files, see
    :mod:`fastsr.tf_graph`) or a state dict: official EDSR-PyTorch, BasicSR (bare or under ``params_ema`` /
    ``params``) or fastsr. ``arch`` forces ``"edsr"``,
    ``"edsr-bn"``, ``"mdsr"`` or a preset name; ``overrides`` replace config fields (e.g. ``res_scale``,
    which no checkpoint records). Raises FileNotFoundError for a missing file and :class:`CheckpointError`
    (a ValueError) for anything that cannot be read or does not match.

    What a file can make it do (README, "Loading untrusted checkpoints"): no pickled code runs; nothing is
    allocated from a file's claims (a stored config, a preset) before they agree with the tensors the file
    actually holds -- sizes come from the tensors' shapes, so the network built is no larger than the file's
    own weights; every tensor is checked (dense, strided, float, finite) before use.
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".pb":
        # OpenCV dnn_superres's EDSR files (TensorFlow frozen graphs), read without TensorFlow.
        if arch not in (None, "edsr"):
            raise CheckpointError(f"arch={arch!r} was requested but a .pb file is read as OpenCV's EDSR (arch 'edsr')")
        from .tf_graph import load_opencv_pb

        return load_opencv_pb(source, **overrides)
    state, carried = read_state_dict(source)
    state = _check_tensors(state)
    layout = _detect(state)
    if carried is not None:
        try:
            config = config_from_dict(carried)
            config = config.replace(**overrides) if overrides else config
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"the fastsr checkpoint carries an invalid config: {e}") from e
        if arch is not None:  # the file's own config wins; arch is only checked against it
            wanted = arch if arch in _ARCHS else config_from_name(arch).arch
            if wanted != config.arch:
                raise CheckpointError(f"arch={arch!r} was requested but the checkpoint is a {config.arch}")
        claimed_by = "the config stored in the file" + (" (with the overrides)" if overrides else "")
    else:
        config = infer_config(state, arch=arch, **overrides)
        claimed_by = "the requested network" if arch is not None or overrides else "the inferred network"
    from_basicsr = layout == "basicsr"
    if from_basicsr:
        state = _from_basicsr(state)
        layout = "edsr"
    _check_structure(config, _structure(state, layout), claimed_by)
    # The sizes agree with the tensors; the keys and shapes are compared on a network without storage (meta).
    with torch.device("meta"):
        shapes_only = build(config)
    optional: set[str] = set()
    if from_basicsr:  # BasicSR applies the mean outside its convs: use the config's MeanShift
        optional |= {k for k in shapes_only.state_dict() if k.startswith(("sub_mean.", "add_mean."))}
    # BatchNorm files written before PyTorch 0.4.1 have no num_batches_tracked (unused in eval mode).
    optional |= {k for k in shapes_only.state_dict() if k.endswith("num_batches_tracked")}
    _check_against(shapes_only, state, config, optional)
    _check_values(state)
    model = build(config)
    full = model.state_dict()
    full.update(state)
    model.load_state_dict(full, strict=True)
    log.debug("loaded %s from %s", _describe(config), "a state dict" if isinstance(source, Mapping) else source)
    return model.eval()


# ----------------------------------------------------------------------------------------------- saving


def save(model: EDSR | MDSR, path: str | os.PathLike, *, dtype: torch.dtype | None = None,
         info: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as a fastsr checkpoint that carries its config; ``.safetensors`` or torch format.

    ``dtype`` (e.g. ``torch.float16``) casts the floating-point weights. ``info`` (a JSON-serialisable dict:
    training steps, data, ...) is stored beside the config and read back by :func:`read_info`. The file is
    written to a temporary name and renamed, so an interrupted save never leaves a half-written checkpoint.
    """
    if not isinstance(model, (EDSR, MDSR)):
        raise TypeError(f"save expects a fastsr EDSR or MDSR module, got {type(model).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    info_json = None
    if info is not None:
        if not isinstance(info, Mapping):
            raise TypeError(f"info must be a dict, got {type(info).__name__}")
        try:
            info_json = json.dumps(dict(info), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"info must be JSON-serialisable: {e}") from e
    path = Path(path)
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    config = model.config.to_dict()
    with atomic_write(path) as f:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import save as safetensors_bytes

            metadata = {"format": FORMAT_TAG, "format_version": str(FORMAT_VERSION),
                        "fastsr_version": __version__, "config": json.dumps(config)}
            if info_json is not None:
                metadata["info"] = info_json
            f.write(safetensors_bytes(state, metadata=metadata))
        else:
            obj = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "fastsr_version": __version__,
                   "config": config, "state_dict": state}
            if info_json is not None:
                obj["info"] = info_json
            torch.save(obj, f)
    return path
