"""CUDA graphs (fastsr.engine.graphs) on the CPU: the option is accepted and inert (the same results, nothing
captured); the GPU parity test is tests/test_gpu.py::test_cuda_graphs_replay_equals_the_uncaptured_path."""

from __future__ import annotations

import pytest
import torch

from fastsr.engine import optimize
from fastsr.engine.graphs import GraphedRunner
from fastsr.models import create

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cuda_graphs_are_inert_on_the_cpu(make_image):
    model = create("mdsr-baseline", n_resblocks=2, n_feats=16)
    plain = optimize(model, backend="torch", precision="fp32")
    graphed = optimize(model, backend="torch", precision="fp32", cuda_graphs=True)
    assert all(isinstance(r, GraphedRunner) and not r.active for r in graphed.runners.values())
    for scale in (2, 3, 4):
        x = make_image(2, 9, 7)
        with torch.no_grad():
            assert torch.equal(graphed(x, scale), plain(x, scale))
            assert torch.equal(graphed.run_uint8(x, scale), plain.run_uint8(x, scale))
        assert graphed.activation_bytes(1, 64, 64, scale) == plain.activation_bytes(1, 64, 64, scale)
    assert sum(r.captures + r.replays for r in graphed.runners.values()) == 0


def test_options_are_checked():
    model = create("edsr-baseline-x2", n_resblocks=1, n_feats=8)
    with pytest.raises(TypeError, match="cuda_graphs must be True or False"):
        optimize(model, cuda_graphs="yes")
    with pytest.raises(ValueError, match="max_shapes must be an int >= 1"):
        GraphedRunner(lambda x, quantize=False: x, torch.device("cpu"), max_shapes=0)
