"""The bundled-weights mechanism: fp16 file + checksum, verified on every use."""

from __future__ import annotations

import pytest
import torch

import fastsr
from fastsr.models import MDSRConfig, build
from fastsr.weights import DEFAULT_WEIGHTS, DefaultWeightsMissing, default_weights_path, write_bundle


def test_bundle_round_trip_and_checksum(tmp_path):
    torch.manual_seed(0)
    model = build(MDSRConfig(n_resblocks=1, n_feats=8))
    path = write_bundle(model, tmp_path)
    assert default_weights_path(tmp_path) == path
    loaded = fastsr.load(path)
    assert loaded.config == model.config
    assert torch.equal(loaded.head[0].weight, model.head[0].weight.half().float())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(DefaultWeightsMissing, match="corrupt: sha256"):
        default_weights_path(tmp_path)


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(DefaultWeightsMissing, match="no bundled default weights"):
        default_weights_path(tmp_path)
    (tmp_path / DEFAULT_WEIGHTS).write_bytes(b"x")  # weights without their checksum file
    with pytest.raises(DefaultWeightsMissing):
        default_weights_path(tmp_path)


def test_shipped_bundle_if_present_is_valid():
    try:
        path = default_weights_path()
    except DefaultWeightsMissing:
        pytest.skip("no default weights bundled in this checkout")
    model = fastsr.load(path)
    assert model.config.scales == (2, 3, 4) and model.config.n_resblocks == 16
