"""Shared fixtures: the optional benchmark data folder and small random inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The Triton kernels are tested on CPU under the interpreter, which must be chosen before `triton.jit` runs
# (before fastsr.kernels is imported). With a GPU the real kernels are tested instead (tests marked gpu) and
# the interpreter tests skip: one process cannot have both.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"

# The data lives beside the checkout (../shared/data); FASTSR_DATA points elsewhere.
DATA_DIR = Path(os.environ.get("FASTSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "Set5" / "HR").is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR} (set FASTSR_DATA)")
    return DATA_DIR


@pytest.fixture
def make_image():
    """A factory of seeded random NCHW float images in [0, rgb_range]."""
    gen = torch.Generator().manual_seed(1234)

    def make(n: int, h: int, w: int, rgb_range: float = 255.0, channels: int = 3) -> torch.Tensor:
        return torch.rand(n, channels, h, w, generator=gen) * rgb_range

    return make


@pytest.fixture
def one_thread():
    """One torch thread for tests on tiny tensors: OpenMP spin-waits make them very slow when other jobs
    share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm layer non-trivial running statistics and affine parameters; eval mode."""
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.fixture
def randomize_bn():
    """randomize_bn(model) -> model with random BN statistics, in eval mode (a lost statistic shows)."""
    return _randomize_bn
