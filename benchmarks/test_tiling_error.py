"""The approximate-mode measurement script (benchmarks/tiling_error.py) on a tiny model and a synthetic set:
a halo of the receptive field reproduces exact tiling, and no halo does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

import fastsr
from fastsr.example import example_image
from fastsr.models import MDSRConfig, build
from fastsr.tiling import receptive_field

SCRIPT = Path(__file__).parent / "tiling_error.py"


def test_tiling_error_script(tmp_path):
    torch.manual_seed(0)
    config = MDSRConfig(n_resblocks=1, n_feats=8, scales=(2, 3))
    fastsr.save(build(config).eval(), tmp_path / "tiny.safetensors")
    for s in config.scales:
        lr_dir = tmp_path / "Tiny" / "LR_bicubic" / f"X{s}"
        lr_dir.mkdir(parents=True)
        Image.fromarray(example_image(23, 19)).save(lr_dir / f"card x{s}.png")
    halo = max(receptive_field(config, s) for s in config.scales)
    out = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path), "--set", "Tiny", "--scales", "2,3",
                          "--tile", "8", "--halos", f"0,{halo}", "--model", str(tmp_path / "tiny.safetensors"),
                          "--json", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "r.json").read_text())
    for s in ("2", "3"):
        assert results[str(halo)][s] == {"max_error": 0, "differ_fraction": 0, "psnr": None}  # None: identical
        assert results["0"][s]["max_error"] > 0 and results["0"][s]["psnr"] < 80
    assert f"| {halo} | 0 | < 0.005% | identical |" in out.stdout
