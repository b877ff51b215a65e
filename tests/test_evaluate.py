"""fastsr eval: the paper-protocol bicubic row, model rows, gray images, and the x8 self-ensemble."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fastsr
from fastsr.ensemble import N_TRANSFORMS, self_ensemble, transform, undo
from fastsr.evaluate import evaluate, format_table, super_resolve
from fastsr.example import example_image
from fastsr.metrics import psnr
from fastsr.models import EDSRConfig, MDSRConfig, build

# The paper's bicubic row (Table 3), x2 / x3 / x4; `fastsr eval` must be within 0.02 dB.
PAPER_BICUBIC = {"Set5": (33.66, 30.39, 28.42), "Set14": (30.24, 27.55, 26.00), "B100": (29.56, 27.21, 25.96)}


def test_bicubic_row_reproduces_the_paper(data_dir):
    results = evaluate(data_dir, scales=(2, 3, 4), bicubic_row=True)["bicubic"]
    for name, values in PAPER_BICUBIC.items():
        for s, paper in zip((2, 3, 4), values):
            assert results[name][s].psnr == pytest.approx(paper, abs=0.02), (name, s)
    assert results["Set14"][2].n_images == 14


def test_cli_bicubic_only_json(data_dir, tmp_path):
    out = tmp_path / "r.json"
    result = subprocess.run([sys.executable, "-m", "fastsr", "eval", "--data", str(data_dir), "--sets", "Set5",
                             "--scale", "2,4", "--bicubic-only", "--json", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| Set5 | x2 | 33.67 / 0.930" in result.stdout
    payload = json.loads(out.read_text())
    assert payload["results"]["bicubic"]["Set5"]["x4"]["psnr"] == pytest.approx(28.42, abs=0.02)


@pytest.fixture
def tiny_set(tmp_path):
    """A benchmark folder with one colour and one gray HR image and no stored LR (made on the fly)."""
    hr = tmp_path / "Tiny" / "HR"
    hr.mkdir(parents=True)
    Image.fromarray(example_image(26, 30)).save(hr / "card.png")
    Image.fromarray(example_image(24, 21)[..., 1]).save(hr / "gray.png")  # mode L
    return tmp_path


def test_model_row_matches_a_manual_computation(tiny_set):
    torch.manual_seed(0)
    model = build(MDSRConfig(n_resblocks=1, n_feats=8, scales=(2, 3))).eval()
    results = evaluate(tiny_set, ["Tiny"], [3], model=model)
    from fastsr.evaluate import benchmark_pairs

    manual = [psnr(super_resolve(model, lr, 3), hr, shave=3) for _, lr, hr in benchmark_pairs(tiny_set / "Tiny", 3)]
    assert results["model"]["Tiny"][3].psnr == pytest.approx(np.mean(manual))
    assert results["model"]["Tiny"][3].n_images == 2
    assert "| Tiny | x3 |" in format_table(results)
    with pytest.raises(ValueError, match="the model has no x4"):
        evaluate(tiny_set, ["Tiny"], [4], model=model)
    with pytest.raises(FileNotFoundError, match="benchmark set 'Nope' not found"):
        evaluate(tiny_set, ["Nope"], [2])


def test_gray_images_stay_gray():
    model = build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)).eval()
    gray = example_image(9, 11)[..., 0]
    out = super_resolve(model, gray, 2)
    assert out.shape == (18, 22) and out.dtype == np.uint8
    x = torch.from_numpy(np.repeat(gray[None, None], 3, axis=1)).float()
    with torch.no_grad():
        expected = model(x).clamp(0, 255).mean(dim=1).round()[0].to(torch.uint8).numpy()
    assert np.array_equal(out, expected)
    assert np.array_equal(out, fastsr.Upscaler(model, backend="reference")(gray, 2))  # one gray convention


def test_transforms_are_inverted():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    seen = set()
    for k in range(N_TRANSFORMS):
        assert torch.equal(undo(transform(x, k), k), x)
        seen.add(tuple(transform(x, k).flatten().tolist()))
    assert len(seen) == N_TRANSFORMS  # eight distinct transforms


def test_self_ensemble_is_the_mean_of_the_eight_runs(make_image):
    model = build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)).eval()
    x = make_image(2, 5, 7)
    with torch.no_grad():
        ens = self_ensemble(model, x)
        runs = [undo(model(transform(x, k).contiguous()), k) for k in range(N_TRANSFORMS)]
        single = model(x)
    torch.testing.assert_close(ens, torch.stack(runs).mean(0), atol=1e-4, rtol=1e-6)
    assert (ens - single).abs().max() > 1e-3  # a random network is not equivariant: the ensemble changes things


def test_ensemble_option_of_super_resolve():
    model = build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)).eval()
    lr = example_image(8, 10)
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = self_ensemble(model, x).clamp(0, 255).round()[0].permute(1, 2, 0).to(torch.uint8).numpy()
    assert np.array_equal(super_resolve(model, lr, 2, ensemble=True), expected)


def test_read_pixels_keeps_gray_and_drops_alpha(tmp_path):
    from fastsr.imageio import read_pixels

    rgb = example_image(9, 7)
    gray = rgb[..., 1]
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(gray).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "p.png")
    assert np.array_equal(read_pixels(tmp_path / "g.png"), gray)
    assert np.array_equal(read_pixels(tmp_path / "la.png"), gray)
    assert np.array_equal(read_pixels(tmp_path / "g.png", gray=False), np.dstack([gray] * 3))  # training: RGB
    assert np.array_equal(read_pixels(tmp_path / "rgba.png"), rgb)
    with Image.open(tmp_path / "p.png") as im:
        assert np.array_equal(read_pixels(tmp_path / "p.png"), np.asarray(im.convert("RGB")))
    sixteen = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5957).astype(np.uint16)  # up to 65527
    Image.fromarray(sixteen).save(tmp_path / "16.png")
    with Image.open(tmp_path / "16.png") as im:
        assert im.mode.startswith("I")  # 16-bit gray on disk
    assert np.array_equal(read_pixels(tmp_path / "16.png"), np.rint(sixteen / 257).astype(np.uint8))
    assert read_pixels(tmp_path / "16.png", gray=False).shape == (3, 4, 3)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ValueError, match="cannot read image .*bad.png"):
        read_pixels(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="input not found"):
        read_pixels(tmp_path / "missing.png")
