"""The official EDSR-PyTorch key layout, which fastsr's own networks share: what a state dict in it describes
(architecture, depth, width, scales, colours, read from key names and tensor shapes), and
:func:`build_checked`, which every format's conversion ends in.

Sizes come from the tensors, never from a file's claims: a stored config or a preset is compared with the
tensors (:func:`check_structure`) before anything is allocated, then key for key and shape for shape on a
network without storage, and every value is checked finite before the real network is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._errors import CheckpointError
from ..models.config import EDSRConfig, MDSRConfig, config_from_name, preset_names
from ..models.networks import EDSR, MDSR, build

ARCHS = ("edsr", "edsr-bn", "mdsr")
MAX_LISTED = 12  # keys listed per category in an error message
# The MeanShift convs: absent from files whose format applies the mean outside its convs (BasicSR, OpenCV),
# where the config's MeanShift does it.
MEAN_KEYS = ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias")


def count_indexed(state: Mapping[str, Any], template: str) -> int:
    n = 0
    while template.format(n) in state:
        n += 1
    return n


def layout_of(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"edsr"``, ``"edsr-bn"`` or ``"mdsr"`` for a state dict in the official EDSR-PyTorch key layout (which
    fastsr's networks share), else ``None``."""
    if any(k.startswith(("pre_process.", "upsample.")) for k in state) and "tail.0.weight" in state:
        return "mdsr"
    if "head.0.weight" in state and "body.0.body.0.weight" in state:
        if "body.0.body.1.running_mean" in state or "body.0.body.1.weight" in state:
            return "edsr-bn"
        return "edsr"
    return None


def no_known_layout(state: Mapping[str, torch.Tensor]) -> CheckpointError:
    listed = ", ".join(repr(k) for k in list(state)[:MAX_LISTED])
    return CheckpointError(
        "the state dict matches no known layout (EDSR-PyTorch EDSR / MDSR / batch-norm baseline, BasicSR "
        f"EDSR, fastsr): expected keys such as 'head.0.weight' or 'conv_first.weight'; it has {len(state)} "
        f"keys: {listed}{', ...' if len(state) > MAX_LISTED else ''}"
    )


def require_layout(state: Mapping[str, torch.Tensor]) -> str:
    layout = layout_of(state)
    if layout is None:
        raise no_known_layout(state)
    return layout


def conv_shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"missing key {key!r}, which the layout needs to infer the network")
    shape = tuple(state[key].shape)
    if len(shape) != 4:
        raise CheckpointError(f"{key!r} should be a 4-D conv weight, got shape {shape}")
    return shape


def upsampler_scale(state: Mapping[str, torch.Tensor], prefix: str, n_feats: int) -> int:
    """Scale of the upsampler whose convs are ``{prefix}.0``, ``{prefix}.2``, ... (4F -> x2, 9F -> x3).

    EDSR's conv-shuffle tail (OpenCV's zoo files, see fastsr.sources.opencv_pb) has instead one conv ``tail.0``,
    F -> colours x s^2, and one pixel shuffle by s."""
    if prefix == "tail.0" and f"{prefix}.weight" in state and f"{prefix}.0.weight" not in state:
        out_channels, in_channels = conv_shape(state, f"{prefix}.weight")[:2]
        n_colors = conv_shape(state, "head.0.weight")[1]
        s = math.isqrt(out_channels // n_colors) if out_channels % n_colors == 0 else 0
        if in_channels != n_feats or s < 2 or s * s * n_colors != out_channels:
            raise CheckpointError(
                f"{prefix}.weight has shape {tuple(state[prefix + '.weight'].shape)}; a conv-shuffle tail conv "
                f"maps {n_feats} features to {n_colors} colours x scale^2 (e.g. {n_colors * 16} for x4)"
            )
        return s
    scale, j = 1, 0
    while f"{prefix}.{j}.weight" in state:
        out_channels = conv_shape(state, f"{prefix}.{j}.weight")[0]
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


def colour_stats(state: Mapping[str, torch.Tensor], rgb_range: float, n_colors: int) -> dict[str, Any]:
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


def structure(state: Mapping[str, torch.Tensor], layout: str) -> dict[str, Any]:
    """The sizes that decide what a network allocates -- width, colours, depth, scales -- read from the shapes
    and key names of the tensors in ``state`` (official key layout; ``layout`` from :func:`layout_of`)."""
    n_feats, n_colors = conv_shape(state, "head.0.weight")[:2]
    n_resblocks = count_indexed(state, "body.{}.body.0.weight")
    if n_resblocks == 0:
        raise CheckpointError("missing key 'body.0.body.0.weight': the checkpoint has no residual blocks")
    if layout == "mdsr":
        n_branches = count_indexed(state, "upsample.{}.0.weight")
        scales = tuple(upsampler_scale(state, f"upsample.{k}", n_feats) for k in range(n_branches))
    else:
        scales = (upsampler_scale(state, "tail.0", n_feats),)
    return {"arch": layout, "n_feats": n_feats, "n_colors": n_colors, "n_resblocks": n_resblocks, "scales": scales}


def check_structure(config: EDSRConfig | MDSRConfig, structure: Mapping[str, Any], claimed_by: str) -> None:
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
    """The config of the network a state dict in the official (EDSR-PyTorch / fastsr) key layout belongs to.

    ``arch`` may be ``"edsr"``, ``"edsr-bn"``, ``"mdsr"`` (checked against the detected layout) or a preset
    name (its config is used as the base instead of inference). ``overrides`` replace config fields.
    """
    layout = require_layout(state)
    if arch is not None and arch not in ARCHS:
        if arch not in preset_names():
            raise ValueError(f"arch must be one of {ARCHS} or a preset name ({', '.join(preset_names())}), got {arch!r}")
        config = config_from_name(arch)
        if config.arch != layout:
            raise CheckpointError(f"arch={arch!r} is a {config.arch} preset but the checkpoint is a {layout}")
        return config.replace(**overrides) if overrides else config
    if arch is not None and arch != layout:
        raise CheckpointError(f"arch={arch!r} was requested but the checkpoint's keys are those of a {layout}")

    sizes = structure(state, layout)
    n_feats, n_colors = sizes["n_feats"], sizes["n_colors"]
    fields: dict[str, Any] = dict(n_feats=n_feats, n_colors=n_colors, n_resblocks=sizes["n_resblocks"])
    fields.update(colour_stats(state, float(overrides.get("rgb_range", 255.0)), n_colors))
    if n_colors != 3 and "rgb_mean" not in fields and "rgb_mean" not in overrides:
        raise CheckpointError(
            f"the checkpoint has {n_colors} colour channels and no MeanShift to read the mean from; pass "
            "rgb_mean=(...) and rgb_std=(...) with one entry per channel"
        )
    try:
        if layout == "mdsr":
            config: EDSRConfig | MDSRConfig = MDSRConfig(scales=sizes["scales"], **fields)
        else:
            # The paper's wide EDSR (256 features) uses residual scaling 0.1; the baseline uses none.
            res_scale = 0.1 if n_feats == 256 else 1.0
            if "tail.0.weight" in state and "tail.0.0.weight" not in state:
                fields["tail"] = "conv-shuffle"  # OpenCV's EDSR files (fastsr.sources.opencv_pb)
            config = EDSRConfig(scale=sizes["scales"][0], res_scale=res_scale, batch_norm=layout == "edsr-bn",
                                **fields)
        return config.replace(**overrides) if overrides else config
    except (TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"the checkpoint describes an invalid network: {e}") from e


def describe(config: EDSRConfig | MDSRConfig) -> str:
    scales = f"x{config.scale}" if isinstance(config, EDSRConfig) else "scales " + "/".join(f"x{s}" for s in config.scales)
    return f"{config.arch} ({config.n_resblocks} blocks, {config.n_feats} features, {scales})"


def check_against(model: nn.Module, state: Mapping[str, torch.Tensor], config: EDSRConfig | MDSRConfig,
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
        more = f", ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
        return ", ".join(items[:MAX_LISTED]) + more

    parts = [f"the checkpoint does not match the inferred network {describe(config)}:"]
    if missing:
        parts.append(f"missing keys: {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {listing(unexpected)}")
    if mismatched:
        parts.append("shape mismatches (checkpoint vs network): "
                     + listing([f"{k} {got} vs {want}" for k, got, want in mismatched]))
    raise CheckpointError("\n  ".join(parts))


def check_values(state: Mapping[str, torch.Tensor]) -> None:
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{key!r} contains NaN or infinite values")


def build_checked(config: EDSRConfig | MDSRConfig, state: Mapping[str, torch.Tensor], claimed_by: str, *,
                  layout: str, optional: set[str] = frozenset()) -> EDSR | MDSR:
    """The network of ``config`` (eval mode, fp32, CPU) holding ``state`` (official key layout, tensors
    already passed by :func:`fastsr.sources.raw.check_tensors`).

    ``layout`` is the state's (:func:`layout_of`); ``claimed_by`` names where ``config`` came from, for the error
    when its sizes are not the tensors'.
    ``optional`` keys may be absent from ``state`` (they keep the built network's values).
    """
    check_structure(config, structure(state, layout), claimed_by)
    # The sizes agree with the tensors; the keys and shapes are compared on a network without storage (meta).
    with torch.device("meta"):
        shapes_only = build(config)
    # BatchNorm files written before PyTorch 0.4.1 have no num_batches_tracked (unused in eval mode).
    optional = set(optional) | {k for k in shapes_only.state_dict() if k.endswith("num_batches_tracked")}
    check_against(shapes_only, state, config, optional)
    check_values(state)
    model = build(config)
    full = model.state_dict()
    full.update(state)
    model.load_state_dict(full, strict=True)
    return model.eval()
