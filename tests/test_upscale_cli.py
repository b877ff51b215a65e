"""``fastsr upscale`` on files, folders and globs: formats kept, bad files reported while the rest go on, exit
codes, no overwriting without --overwrite, atomic writes (no temporary files left), the pixel limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastsr
from fastsr.cli import main
from fastsr.models import EDSRConfig, build

# Tiny tensors: one thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    # One thread: the images are tiny, and OpenMP spin-waits are slow on cores shared with other jobs.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fastsr", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env, check=False)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return str(fastsr.save(build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)), tmp_path / "tiny.safetensors"))


@pytest.fixture
def folder(tmp_path):
    """RGB, RGBA, JPEG, 16-bit gray, a GIF with transparency, one corrupt and one truncated file."""
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(d / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (10, 14, 4), dtype=np.uint8)).save(d / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(d / "photo.jpeg")
    Image.fromarray(rng.integers(0, 65536, (10, 14), dtype=np.uint16)).save(d / "deep.png")
    gif = Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).convert("P")
    gif.putpixel((0, 0), 0)  # the transparent index must be used, or the GIF writer drops it
    gif.save(d / "anim.gif", transparency=0)
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    data = (d / "rgb.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "notes.txt").write_text("not an image, and not picked up")
    return d


EXPECTED = {"rgb.png": ("PNG", "RGB"), "rgba.png": ("PNG", "RGBA"), "photo.jpeg": ("JPEG", "RGB"),
            "deep.png": ("PNG", "I;16"), "anim.png": ("PNG", "RGBA")}


def test_folder_with_bad_files_overwrite_rules_and_exit_codes(tmp_path, folder, checkpoint):
    out = tmp_path / "out" / "nested"  # created
    result = cli("upscale", str(folder), "-s", "2", "--model", checkpoint, "-o", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"cannot read image {folder / 'corrupt.png'}" in result.stderr
    assert f"cannot read image {folder / 'truncated.png'}" in result.stderr
    assert "5 of 7 images upscaled, 2 failed" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED)
    for name, (fmt, mode) in EXPECTED.items():
        with Image.open(out / name) as im:
            assert (im.format, im.mode, im.size) == (fmt, mode, (28, 20)), name
    assert leftovers(tmp_path) == []
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # Again, over a glob of the good files: every output exists -> all refused, nothing touched.
    pattern = str(folder / "r*.png")
    result = cli("upscale", pattern, "-s", "2", "--model", checkpoint, "-o", str(out))
    assert result.returncode == 2
    assert result.stderr.count("exists; pass --overwrite") == 2
    assert "0 of 2 images upscaled, 2 failed" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    result = cli("upscale", pattern, "-s", "2", "--model", checkpoint, "-o", str(out), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == [str(out / "rgb.png"), str(out / "rgba.png")]
    assert leftovers(tmp_path) == []


def test_example_default_output_and_usage_errors(tmp_path, checkpoint):
    result = cli("upscale", "--example", "-s", "2", "--model", checkpoint, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "example_x2.png") as im:
        assert im.size == (256, 192)
    result = cli("upscale", "--example", "-s", "2", "--model", checkpoint, "--max-pixels", "100",
                 "-o", str(tmp_path / "big.png"))
    assert result.returncode == 2
    assert "over the limit of 100" in result.stderr and "--max-pixels" in result.stderr
    # A preset name other than the bundled weights' has no weights (mdsr-baseline is the bundle: accepted).
    result = cli("upscale", "--example", "-s", "2", "--model", "edsr-baseline-x2", "-o", str(tmp_path / "p.png"))
    assert result.returncode == 2
    assert "preset name, which has no weights" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example_x2.png", "tiny.safetensors"]


# In-process (no interpreter start-up): naming rules, the tile / halo / ensemble options, atomicity.


def _image(path: Path, size=(10, 14)) -> Path:
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_default_output_names(tmp_path, checkpoint, capsys):
    a = _image(tmp_path / "a.png")
    d = tmp_path / "shots"
    d.mkdir()
    _image(d / "b.png")
    assert main(["upscale", str(a), str(d), "-s", "2", "--model", checkpoint]) == 0
    assert (tmp_path / "a_x2.png").is_file()  # beside a file
    assert (tmp_path / "shots_x2" / "b.png").is_file()  # a folder goes to FOLDER_x<s>/
    outdir = tmp_path / "into"
    outdir.mkdir()
    assert main(["upscale", str(a), "-s", "2", "--model", checkpoint, "-o", str(outdir)]) == 0
    assert (outdir / "a.png").is_file()  # one input, -o an existing folder: inside it
    assert main(["upscale", str(a), "-s", "2", "--model", checkpoint, "-o", str(tmp_path / "x" / "y.png")]) == 2
    assert "output folder does not exist" in capsys.readouterr().err


def test_never_overwrites_an_input_even_with_overwrite(tmp_path, checkpoint, capsys):
    a = _image(tmp_path / "a.png")
    original = a.read_bytes()
    assert main(["upscale", str(tmp_path), "-s", "2", "--model", checkpoint, "-o", str(tmp_path), "--overwrite"]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert a.read_bytes() == original


def test_tile_halo_and_ensemble_options(tmp_path, checkpoint):
    a = _image(tmp_path / "a.png", size=(24, 30))
    outs = {}
    for name, extra in {"plain": [], "tiled": ["--tile", "5"], "ensemble": ["--ensemble", "--tile", "7"],
                        "approx": ["--tile", "5", "--halo", "0"]}.items():
        out = tmp_path / f"{name}.png"
        assert main(["upscale", str(a), "-s", "2", "--model", checkpoint, "-o", str(out), *extra]) == 0
        outs[name] = np.asarray(Image.open(out)).astype(int)
    assert np.abs(outs["tiled"] - outs["plain"]).max() <= 1  # exact tiling (up to float ties)
    assert np.abs(outs["approx"] - outs["plain"]).max() > 1  # no halo: seams
    assert not np.array_equal(outs["ensemble"], outs["plain"])
    assert fastsr.upscale(np.asarray(Image.open(a)), 2, model=checkpoint, ensemble=True).shape == (48, 60, 3)


def test_a_failed_write_leaves_no_file(tmp_path, checkpoint, monkeypatch, capsys):
    a = _image(tmp_path / "a.png")
    out = tmp_path / "out.png"

    def broken_save(self, fp, format=None, **params):
        fp.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    assert main(["upscale", str(a), "-s", "2", "--model", checkpoint, "-o", str(out)]) == 2
    assert "disk full" in capsys.readouterr().err
    assert not out.exists()
    assert leftovers(tmp_path) == []
