"""OpenCV dnn_superres's EDSR files (``EDSR_x2.pb`` ...): TensorFlow frozen graphs, read without TensorFlow."""

from __future__ import annotations

from typing import Any

import torch

from .._errors import CheckpointError
from ..models.config import EDSRConfig
from .raw import Raw

NAME = "opencv-pb"
CARRIES_CONFIG = True  # the graph fixes the network: overrides may change what it does not hold
MEAN_IN_CONFIG = True  # OpenCV's mean is a constant of the graph, applied by the config's MeanShift


def detect(raw: Raw) -> bool:
    return raw.obj is None and raw.path is not None and raw.path.suffix.lower() == ".pb"


def convert(raw: Raw, *, arch: str | None = None, **overrides: Any) -> tuple[EDSRConfig, dict[str, torch.Tensor]]:
    if arch not in (None, "edsr"):
        raise CheckpointError(f"arch={arch!r} was requested but a .pb file is read as OpenCV's EDSR (arch 'edsr')")
    from ..tf_graph import opencv_pb_state_dict

    fields, state = opencv_pb_state_dict(raw.path)
    try:
        config = EDSRConfig(**{**fields, **overrides})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"the OpenCV EDSR graph gives an invalid fastsr config: {e}") from e
    return config, state
