"""The ``fastsr`` command, run as a subprocess, and the bundled example image."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fastsr
from fastsr.example import example_image, example_path
from fastsr.models import EDSRConfig, MDSRConfig, build
from fastsr.weights import DefaultWeightsMissing, default_weights_path


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastsr", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_version():
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fastsr {fastsr.__version__}"


def test_info_lists_versions_and_backends():
    result = cli("info")
    assert result.returncode == 0, result.stderr
    assert re.search(rf"^torch +{re.escape(torch.__version__)}$", result.stdout, re.M)
    from fastsr.system import cpu_bf16_isa, default_cpu_precision

    precision, why = default_cpu_precision()
    assert re.search(rf"^cpu default precision +{precision} \({re.escape(why)}\)$", result.stdout, re.M)
    assert re.search(rf"^cpu bf16 +{cpu_bf16_isa() or 'none'}", result.stdout, re.M)
    assert "backends:" in result.stdout
    assert "  torch      yes" in result.stdout
    assert re.search(r"^  auto +yes +the default: " + ("per op" if torch.cuda.is_available() else "means torch"),
                     result.stdout, re.M)
    expected_triton = "yes" if torch.cuda.is_available() else "no "
    assert f"  triton     {expected_triton}" in result.stdout


def test_no_command_prints_help_and_fails():
    result = cli()
    assert result.returncode == 2
    assert "usage: fastsr" in result.stdout


def test_bundled_example_is_the_generated_card():
    shipped = np.asarray(Image.open(example_path()))
    assert shipped.shape == (96, 128, 3)
    assert np.array_equal(shipped, example_image())


def test_upscale_example_with_default_weights_or_clear_error(tmp_path):
    result = cli("upscale", "--example", "-s", "2", cwd=tmp_path)
    try:
        default_weights_path()
    except DefaultWeightsMissing:
        assert result.returncode == 2
        assert "no bundled default weights" in result.stderr
        assert "Traceback" not in result.stderr
        assert list(tmp_path.iterdir()) == []
    else:
        assert result.returncode == 0, result.stderr
        assert Image.open(tmp_path / "example_x2.png").size == (256, 192)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return fastsr.save(build(MDSRConfig(n_resblocks=1, n_feats=8, scales=(2, 3))), tmp_path / "tiny.safetensors")


def test_upscale_with_model_matches_the_module(tmp_path, checkpoint):
    src = tmp_path / "in.png"
    Image.fromarray(example_image(12, 17)).save(src)
    result = cli("upscale", str(src), "-s", "3", "--model", str(checkpoint), "-o", str(tmp_path / "out.png"),
                 "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (36, 51, 3)
    model = fastsr.load(checkpoint)
    x = torch.from_numpy(example_image(12, 17)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = model(x, 3).clamp(0, 255).round()[0].permute(1, 2, 0).to(torch.uint8).numpy()
    assert np.array_equal(out, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png", "tiny.safetensors"]  # no temp files


def test_upscale_refuses_bad_requests(tmp_path, checkpoint):
    src = tmp_path / "in.png"
    Image.fromarray(example_image(8, 8)).save(src)
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    cases = [
        (["upscale", str(src), "-s", "2", "--model", str(checkpoint), "-o", str(out)], "exists; pass --overwrite"),
        (["upscale", str(src), "-s", "2", "--model", str(checkpoint), "-o", str(src)], "refusing to overwrite the input"),
        (["upscale", str(src), "-s", "4", "--model", str(checkpoint), "-o", str(tmp_path / "a.png")], "no x4"),
        (["upscale", str(tmp_path / "missing.png"), "--model", str(checkpoint)], "input not found"),
        (["upscale", str(src), "-s", "2", "--model", str(tmp_path / "nope.pt")], "checkpoint not found"),
        (["upscale", str(checkpoint), "-s", "2", "--model", str(checkpoint), "-o", str(tmp_path / "b.png")], "cannot read image"),
        (["upscale", "--example", str(src)], "exactly one of INPUT or --example"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.returncode == 2, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert out.read_bytes() == b"precious"
    result = cli("upscale", str(src), "-s", "2", "--model", str(checkpoint), "-o", str(out), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (16, 16)


def test_upscale_edsr_checks_its_single_scale(tmp_path):
    ckpt = fastsr.save(build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)), tmp_path / "e.pt")
    src = tmp_path / "in.png"
    Image.fromarray(example_image(8, 8)).save(src)
    result = cli("upscale", str(src), "-s", "3", "--model", str(ckpt))
    assert result.returncode == 2
    assert "the model has no x3; it upscales by x2" in result.stderr


def test_import_fastsr_never_imports_the_optional_parts():
    """``import fastsr`` (and the engine on the CPU) must not import Triton, ONNX, the CPU peers or Ray."""
    code = ("import sys, torch, fastsr\n"
            "engine = fastsr.optimize(fastsr.models.create('edsr-baseline-x2').eval(), backend='torch')\n"
            "engine(torch.rand(1, 3, 8, 8) * 255)\n"
            "import fastsr.cli, fastsr.distributed\n"  # --ray and fastsr.distributed import Ray only when they run
            "fastsr.cli.build_parser().parse_args(['upscale', 'x.png', '-o', 'out', '--ray'])\n"
            "print(sorted(m for m in ('triton', 'onnx', 'onnxruntime', 'openvino', 'cv2', 'ray', 'pyarrow')"
            " if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
