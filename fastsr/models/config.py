"""Model configurations: keyword-only dataclasses and named presets.

Two configs cover the three reference networks:

* :class:`EDSRConfig` -- EDSR (Lim et al. 2017) and, with ``batch_norm=True``, the batch-norm baseline the
  paper compares against (SRResNet-style conv-BN-ReLU-conv-BN residual blocks, same width and depth).
* :class:`MDSRConfig` -- the multi-scale MDSR: one shared body, per-scale pre-processing and upsampler.

Presets (``from_name``) reproduce the official EDSR-PyTorch models. ``scale`` is part of an EDSR config (one
upsampler), while MDSR carries the tuple of scales it has branches for and takes the scale as a forward
argument.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

# EDSR-PyTorch's MeanShift constants: the DIV2K RGB mean (on a [0, 1] scale) and a unit std.
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)
UNIT_STD: tuple[float, float, float] = (1.0, 1.0, 1.0)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def check_scale(scale: Any) -> int:
    """Validate an upscaling factor: 3 or a power of two >= 2 (the factors an upsampler can build)."""
    if isinstance(scale, bool) or not isinstance(scale, int):
        raise TypeError(f"scale must be an int, got {type(scale).__name__} {scale!r}")
    if scale == 3 or (scale >= 2 and scale & (scale - 1) == 0):
        return scale
    raise ValueError(f"scale must be 3 or a power of two >= 2 (2, 4, 8, ...), got {scale}")


def upsample_factors(scale: int) -> tuple[int, ...]:
    """The PixelShuffle factors of an upsampler for ``scale``: (3,) or (2, 2, ...)."""
    check_scale(scale)
    if scale == 3:
        return (3,)
    return (2,) * (scale.bit_length() - 1)


def _check_colour_stats(n_colors: int, rgb_mean: Any, rgb_std: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    out = []
    for name, values, positive in (("rgb_mean", rgb_mean, False), ("rgb_std", rgb_std, True)):
        try:
            values = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a sequence of numbers, got {values!r}") from None
        if len(values) != n_colors:
            raise ValueError(f"{name} must have n_colors={n_colors} entries, got {len(values)}: {values}")
        if not all(math.isfinite(v) for v in values) or (positive and min(values) <= 0):
            raise ValueError(f"{name} entries must be finite{' and > 0' if positive else ''}, got {values}")
        out.append(values)
    return out[0], out[1]


@dataclass(frozen=True, kw_only=True)
class _BaseConfig:
    n_resblocks: int = 16
    n_feats: int = 64
    n_colors: int = 3
    rgb_range: float = 255.0
    rgb_mean: tuple[float, ...] = DIV2K_RGB_MEAN
    rgb_std: tuple[float, ...] = UNIT_STD

    arch: ClassVar[str]
    _presets: ClassVar[dict[str, dict[str, Any]]]
    _omit_when_default: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        _check_int("n_resblocks", self.n_resblocks, 1)
        _check_int("n_feats", self.n_feats, 1)
        _check_int("n_colors", self.n_colors, 1)
        _check_positive_float("rgb_range", self.rgb_range)
        mean, std = _check_colour_stats(self.n_colors, self.rgb_mean, self.rgb_std)
        object.__setattr__(self, "rgb_range", float(self.rgb_range))
        object.__setattr__(self, "rgb_mean", mean)
        object.__setattr__(self, "rgb_std", std)

    @classmethod
    def from_name(cls, name: str, **overrides: Any):
        """The preset ``name`` (see :meth:`presets`), with fields replaced by ``overrides``."""
        if name not in cls._presets:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; known: {', '.join(cls._presets)}")
        return cls(**{**cls._presets[name], **overrides})

    @classmethod
    def presets(cls) -> tuple[str, ...]:
        return tuple(cls._presets)

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied (validated like a new config)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def require_scale(self, scale: Any) -> int:
        """``scale`` if the model has it; TypeError for a non-int, ValueError ("the model has no x3; it
        upscales by x2") for a scale it has no branch for. The one scale check of models, engine and API."""
        if isinstance(scale, bool) or not isinstance(scale, int):
            raise TypeError(f"scale must be an int, got {type(scale).__name__} {scale!r}")
        if scale not in self.scales:  # type: ignore[attr-defined]
            raise ValueError(f"the model has no x{scale}; it upscales by "
                             + ", ".join(f"x{s}" for s in self.scales))  # type: ignore[attr-defined]
        return scale

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict that :func:`config_from_dict` turns back into an equal config.

        Fields added after the first file format (EDSR's ``tail``) are left out while they hold their default,
        so the files of networks that do not use them stay readable by earlier fastsr versions."""
        d = dataclasses.asdict(self)
        for name, default in self._omit_when_default.items():
            if d.get(name, object()) == default:
                del d[name]
        return {"arch": self.arch, **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}


@dataclass(frozen=True, kw_only=True)
class EDSRConfig(_BaseConfig):
    """EDSR, or with ``batch_norm=True`` the batch-norm baseline (conv-BN-ReLU-conv-BN blocks).

    ``res_scale`` multiplies each residual branch (0.1 in the paper's wide EDSR, 1 in the baseline).

    ``tail`` is how the body's features become the image: ``"upsampler"`` (the paper's: one conv F -> r^2 F +
    pixel shuffle per factor r, then a conv F -> colours at full resolution) or ``"conv-shuffle"`` (one conv
    F -> colours x scale^2 at input resolution and a single pixel shuffle by ``scale``; nothing after it), the
    tail of the EDSR files in OpenCV's ``dnn_superres`` zoo (see :mod:`fastsr.sources.opencv_pb`).
    """

    res_scale: float = 1.0
    scale: int = 2
    batch_norm: bool = False
    tail: str = "upsampler"

    TAILS: ClassVar[tuple[str, ...]] = ("upsampler", "conv-shuffle")
    _omit_when_default: ClassVar[dict[str, Any]] = {"tail": "upsampler"}

    _presets: ClassVar[dict[str, dict[str, Any]]] = {
        **{f"edsr-baseline-x{s}": dict(n_resblocks=16, n_feats=64, res_scale=1.0, scale=s) for s in (2, 3, 4)},
        **{f"edsr-x{s}": dict(n_resblocks=32, n_feats=256, res_scale=0.1, scale=s) for s in (2, 3, 4)},
        **{
            f"edsr-bn-baseline-x{s}": dict(n_resblocks=16, n_feats=64, res_scale=1.0, scale=s, batch_norm=True)
            for s in (2, 3, 4)
        },
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_float("res_scale", self.res_scale)
        object.__setattr__(self, "res_scale", float(self.res_scale))
        check_scale(self.scale)
        if not isinstance(self.batch_norm, bool):
            raise TypeError(f"batch_norm must be a bool, got {self.batch_norm!r}")
        if not isinstance(self.tail, str):
            raise TypeError(f"tail must be a str, got {type(self.tail).__name__} {self.tail!r}")
        if self.tail not in self.TAILS:
            raise ValueError(f"tail must be one of {self.TAILS}, got {self.tail!r}")

    @property
    def arch(self) -> str:  # type: ignore[override]
        return "edsr-bn" if self.batch_norm else "edsr"

    @property
    def scales(self) -> tuple[int, ...]:
        return (self.scale,)


@dataclass(frozen=True, kw_only=True)
class MDSRConfig(_BaseConfig):
    """MDSR: a shared body with, per scale, two 5x5 residual blocks of pre-processing and an upsampler."""

    scales: tuple[int, ...] = (2, 3, 4)
    res_scale: float = 1.0

    arch: ClassVar[str] = "mdsr"
    _presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mdsr-baseline": dict(n_resblocks=16, n_feats=64),
        "mdsr": dict(n_resblocks=80, n_feats=64),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_float("res_scale", self.res_scale)
        object.__setattr__(self, "res_scale", float(self.res_scale))
        if isinstance(self.scales, (str, bytes)) or not hasattr(self.scales, "__iter__"):
            raise TypeError(f"scales must be a sequence of ints, got {self.scales!r}")
        scales = tuple(self.scales)
        if not scales:
            raise ValueError("scales must not be empty")
        for s in scales:
            check_scale(s)
        if len(set(scales)) != len(scales):
            raise ValueError(f"scales must be distinct, got {scales}")
        object.__setattr__(self, "scales", scales)


CONFIG_TYPES: dict[str, type[_BaseConfig]] = {"edsr": EDSRConfig, "edsr-bn": EDSRConfig, "mdsr": MDSRConfig}


def preset_names() -> tuple[str, ...]:
    """Every preset name, EDSR (and BN baseline) first, then MDSR."""
    return EDSRConfig.presets() + MDSRConfig.presets()


def config_from_name(name: str, **overrides: Any) -> EDSRConfig | MDSRConfig:
    """The config of preset ``name`` (e.g. ``"edsr-baseline-x2"``, ``"mdsr"``) with ``overrides`` applied."""
    if not isinstance(name, str):
        raise TypeError(f"preset name must be a str, got {type(name).__name__}")
    for cls in (EDSRConfig, MDSRConfig):
        if name in cls._presets:
            return cls.from_name(name, **overrides)
    raise ValueError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")


def config_from_dict(d: dict[str, Any]) -> EDSRConfig | MDSRConfig:
    """Inverse of ``to_dict``; raises ValueError / TypeError on anything else."""
    if not isinstance(d, dict) or "arch" not in d:
        raise ValueError(f"a config dict needs an 'arch' key, got {d!r}")
    fields = dict(d)
    arch = fields.pop("arch")
    if arch not in CONFIG_TYPES:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(CONFIG_TYPES)}")
    cls = CONFIG_TYPES[arch]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}")
    for key in ("rgb_mean", "rgb_std", "scales"):
        if isinstance(fields.get(key), list):
            fields[key] = tuple(fields[key])
    if arch == "edsr-bn":
        fields.setdefault("batch_norm", True)
    config = cls(**fields)
    if config.arch != arch:
        raise ValueError(f"config says arch {arch!r} but its fields describe {config.arch!r}")
    return config
