"""Tiling: the receptive field per preset (against the real networks' gradients), the tile grid, exact tiling
(tiled == untiled), the approximate mode, and the memory bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fastsr.models import EDSRConfig, MDSRConfig, build, config_from_name, create
from fastsr.models.common import MeanShift
from fastsr.tiling import (
    MIN_TILE,
    activation_bytes_per_pixel,
    auto_tile_size,
    plan_tiles,
    receptive_field,
    split,
)
from fastsr.upscaler import Upscaler

# Tiny tensors: one thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


EXPECTED_HALO = {
    **{f"edsr-baseline-x{s}": 36 for s in (2, 3, 4)},
    **{f"edsr-bn-baseline-x{s}": 36 for s in (2, 3, 4)},
    **{f"edsr-x{s}": 68 for s in (2, 3, 4)},
    "mdsr-baseline": 44,
    "mdsr": 172,
}
PRESET_SCALES = [(name, s) for name in EXPECTED_HALO for s in config_from_name(name).scales]


@pytest.mark.parametrize(("name", "scale"), PRESET_SCALES)
def test_receptive_field_per_preset(name, scale):
    assert receptive_field(config_from_name(name), scale) == EXPECTED_HALO[name]


def test_receptive_field_sum_and_errors():
    # 1 + 2 * 2 + 1 = 6 convs at LR, the upsampler's conv 1, then 1/2 + 1/4 for x4 -> 7.75 -> 8.
    assert receptive_field(EDSRConfig(n_resblocks=2, n_feats=8, scale=4), 4) == 8
    assert receptive_field(EDSRConfig(n_resblocks=2, n_feats=8, scale=8), 8) == 8  # 7 + 1/2 + 1/4 + 1/8
    assert receptive_field(MDSRConfig(n_resblocks=1, n_feats=8, scales=(2, 3)), 3) == 14  # 4 + 8 + 1 + 1/3
    # The conv-shuffle tail (OpenCV's EDSR files): one 3x3 conv at LR, nothing after the shuffle.
    assert receptive_field(EDSRConfig(n_resblocks=2, n_feats=8, scale=4, tail="conv-shuffle"), 4) == 7
    assert receptive_field(EDSRConfig.from_name("edsr-x4", tail="conv-shuffle"), 4) == 67
    with pytest.raises(ValueError, match="no x3"):
        receptive_field(EDSRConfig(scale=2), 3)
    with pytest.raises(TypeError):
        receptive_field("edsr", 2)


def _positive_weights(model: nn.Module) -> nn.Module:
    """Positive weights and biases: every ReLU stays active, so the gradient shows the structural cone. Weights
    of 0.05-0.1 keep the product along a 170-conv path (~1e-200) above float64's denormals, which are slow."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and not isinstance(m, MeanShift):
                m.weight.copy_(0.05 + 0.05 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.05 * torch.rand(m.bias.shape, generator=gen))
    return model.double().eval()


@pytest.mark.parametrize(("name", "scale"), PRESET_SCALES)
def test_receptive_field_is_the_gradient_support(name, scale):
    """The halo is the reach, in input pixels, of the output pixels at a core's edges -- tight, not a bound."""
    net = _positive_weights(create(name, n_feats=4))  # the reach does not depend on the width
    halo = EXPECTED_HALO[name]
    c, width = halo + 3, 2 * halo + 7
    x = torch.full((1, 3, 1, width), 250.0, dtype=torch.float64, requires_grad=True)
    y = net(x, scale) if name.startswith("mdsr") else net(x)
    # First output column of input column c (reaches furthest left), last one (furthest right).
    (y[..., scale * c] + y[..., scale * c + scale - 1]).sum().backward()
    cols = x.grad[0].abs().sum(dim=(0, 1)).nonzero().flatten()
    assert max(c - int(cols.min()), int(cols.max()) - c) == halo


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_conv_shuffle_receptive_field_is_the_gradient_support(scale):
    """OpenCV's EDSR layout (32 blocks, conv-shuffle tail): 67, and tight."""
    net = _positive_weights(create(f"edsr-x{scale}", n_feats=4, tail="conv-shuffle"))
    halo = receptive_field(net.config, scale)
    assert halo == 67
    c, width = halo + 3, 2 * halo + 7
    x = torch.full((1, 3, 1, width), 250.0, dtype=torch.float64, requires_grad=True)
    (net(x)[..., scale * c] + net(x)[..., scale * c + scale - 1]).sum().backward()
    cols = x.grad[0].abs().sum(dim=(0, 1)).nonzero().flatten()
    assert max(c - int(cols.min()), int(cols.max()) - c) == halo


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 60), w=st.integers(1, 60), tile=st.integers(1, 70), halo=st.integers(0, 20))
def test_plan_tiles_partition_the_image(h, w, tile, halo):
    tiles = plan_tiles(h, w, tile, halo)
    covered = np.zeros((h, w), dtype=np.int32)
    for t in tiles:
        assert 0 < t.y1 - t.y0 <= tile and 0 < t.x1 - t.x0 <= tile
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
        assert (t.iy0, t.iy1, t.ix0, t.ix1) == (max(0, t.y0 - halo), min(h, t.y1 + halo),
                                                max(0, t.x0 - halo), min(w, t.x1 + halo))
    assert (covered == 1).all()
    sizes = {b - a for a, b in split(h, tile)}
    assert max(sizes) - min(sizes) <= 1  # balanced: equal shapes batch together


def test_auto_tile_size_bounds_the_memory_for_any_image_size():
    per_pixel, halo, budget = 4480, 36, 2**30
    for side in (10, 400, 1000, 10_000, 100_000):
        tile = auto_tile_size(side, side, halo, per_pixel, budget)
        if side * side * per_pixel <= budget:
            assert tile == side  # fits: one tile, no halo
        else:
            assert (tile + 2 * halo) ** 2 * per_pixel <= budget
            assert tile == auto_tile_size(100_000, 100_000, halo, per_pixel, budget)  # independent of the size
    # A budget below the smallest useful tile: the smallest tile, still independent of the image size.
    assert auto_tile_size(50_000, 50_000, 172, 9280, 2**20) == max(MIN_TILE, 172)
    assert activation_bytes_per_pixel(config_from_name("edsr-baseline-x4"), 4) > \
        activation_bytes_per_pixel(config_from_name("edsr-baseline-x2"), 2)
    with pytest.raises(ValueError):
        plan_tiles(0, 5, 4, 1)
    with pytest.raises(TypeError):
        plan_tiles(5, 5, 4.0, 1)


# ---------------------------------------------------------------------------------------------- exactness


def _tiny(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mdsr":
        return build(MDSRConfig(n_resblocks=1, n_feats=16, scales=(2, 3))).eval()
    scale = int(kind[-1])
    tail = "conv-shuffle" if kind.startswith("conv-shuffle") else "upsampler"
    return build(EDSRConfig(n_resblocks=2, n_feats=16, scale=scale, tail=tail)).eval()


def _assert_uint8_equal(a: np.ndarray, b: np.ndarray, exact_float: np.ndarray) -> None:
    """Identical -- except a value whose float result is within float noise of a rounding tie may move by one.

    Convolutions on arrays of different shapes round differently in the last bits (oneDNN picks its blocking
    by shape), so bit-identical uint8 cannot be promised where a value lands on x.5 +- 1e-5.
    """
    diff = a.astype(np.int16) - b.astype(np.int16)
    if diff.any():
        assert np.abs(diff).max() == 1
        frac = exact_float[diff != 0] % 1.0
        assert np.all(np.abs(frac - 0.5) < 1e-3), "a uint8 mismatch away from a rounding tie"
        assert np.count_nonzero(diff) <= 2


@pytest.mark.parametrize(("kind", "scale"), [("edsr-x2", 2), ("edsr-x3", 3), ("edsr-x4", 4), ("mdsr", 3),
                                             ("conv-shuffle-x3", 3), ("conv-shuffle-x4", 4)])
def test_exact_tiling_equals_untiled(kind, scale):
    model = _tiny(kind)
    up = Upscaler(model)
    halo = up.receptive_field(scale)
    rng = np.random.default_rng(1)
    h, w = 3 * halo + 5, 4 * halo + 3  # several tiles with a tile side of about the halo
    img8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    tile = halo
    assert len(plan_tiles(h, w, tile, halo)) >= 12
    imgf = img8.astype(np.float32) / 255
    tiled_f, untiled_f = up(imgf, scale, tile=tile), up(imgf, scale, tile=10_000)
    assert np.abs(tiled_f - untiled_f).max() <= 1e-4
    with torch.no_grad():
        x = torch.from_numpy(img8).permute(2, 0, 1)[None].float()
        exact = (model(x, scale) if kind == "mdsr" else model(x))[0].permute(1, 2, 0).clamp(0, 255).numpy()
    _assert_uint8_equal(up(img8, scale, tile=tile), up(img8, scale, tile=10_000), exact)


def test_exact_tiling_with_alpha_gray_16bit_and_batches():
    model = _tiny("edsr-x2")
    up = Upscaler(model)
    halo = up.receptive_field(2)
    rng = np.random.default_rng(2)
    h, w = 2 * halo + 9, 3 * halo + 1
    rgba16 = rng.integers(0, 65536, (h, w, 4), dtype=np.uint16)
    a, b = up(rgba16, 2, tile=halo).astype(np.int32), up(rgba16, 2).astype(np.int32)
    assert np.abs(a - b).max() <= 1  # 16 bits: one level is 1/257 of an 8-bit level
    assert np.array_equal(a[..., 3], b[..., 3])  # alpha (bicubic) is bit-exact
    batch = torch.rand(3, 1, h, w)
    assert (up(batch, 2, tile=halo) - up(batch, 2)).abs().max() <= 1e-4


def test_smaller_halo_is_approximate_and_improves_with_the_halo():
    model = _tiny("edsr-x2")
    up = Upscaler(model)
    rf = up.receptive_field(2)
    img = np.random.default_rng(3).random((40, 40, 3)).astype(np.float32)
    exact = up(img, 2)
    errors = [float(np.abs(up(img, 2, tile=10, halo=halo) - exact).max()) for halo in (0, rf // 2, rf - 1, rf)]
    assert errors[0] > errors[1] > 0 and errors[2] > 0
    assert errors[3] <= 1e-4


# ------------------------------------------------------------------------------------------------ memory

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from fastsr.models import EDSRConfig, build
    from fastsr.upscaler import Upscaler

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

    torch.manual_seed(0)
    model = build(EDSRConfig(n_resblocks=2, n_feats=16, scale=2)).eval()
    img = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    result = {}
    for name, budget in (("tiled", int(sys.argv[1])), ("untiled", 2**40)):
        # The unoptimized module, whose activation estimate the assertions use (the engine's own, smaller
        # footprint is measured in benchmarks/test_memory.py).
        up = Upscaler(model, memory_budget=budget, backend="reference")
        up(img[:8, :8], 2)  # warm-up: oneDNN and allocator set-up is not the image's memory
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM)
        base = status("VmRSS:")
        out = up(img, 2)
        result[name] = status("VmHWM:") - base
        del out
    print(json.dumps(result))
    """
)


def test_tiling_bounds_peak_memory(tmp_path):
    """Peak RSS over the baseline: tiled within its budget plus the image buffers; untiled far above."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    budget = 8 * 2**20
    script = tmp_path / "mem.py"
    script.write_text(_MEMORY_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(script), str(budget)], capture_output=True, text=True, timeout=120,
                         check=False, env=env)
    assert run.returncode == 0, run.stderr
    peak = json.loads(run.stdout)
    # The input as float (3 MiB), the output (3 MiB) and per-tile results, beside the activations.
    buffers = 512 * 512 * 3 * 4 + 1024 * 1024 * 3
    assert peak["tiled"] < budget + 4 * buffers + 24 * 2**20, peak
    per_pixel = activation_bytes_per_pixel(EDSRConfig(n_resblocks=2, n_feats=16, scale=2), 2)
    assert peak["untiled"] > 0.5 * per_pixel * 512 * 512, peak  # the estimate is of the right size
    assert peak["untiled"] > 3 * peak["tiled"], peak
