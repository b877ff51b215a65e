"""The bundled-weights mechanism: fp16 file + checksum, verified on every use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import fastsr
from fastsr.bundle import write_bundle
from fastsr.evaluate import evaluate
from fastsr.models import MDSRConfig, build
from fastsr.system import cpu_bf16_isa
from fastsr.weights import DEFAULT_WEIGHTS, DefaultWeightsMissing, default_weights_path


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


def test_bundle_run_records_provenance(tmp_path):
    from PIL import Image

    from fastsr.bundle import bundle_run, default_weights_info
    from fastsr.example import example_image
    from fastsr.train import TrainOptions, train

    data = tmp_path / "T3"
    data.mkdir()
    for i in range(3):
        Image.fromarray(example_image(40, 44 + i)).save(data / f"{i}.png")
    train(TrainOptions(model="mdsr-baseline", model_overrides=dict(n_resblocks=1, n_feats=8), data=(str(data),),
                       out=str(tmp_path / "run"), steps=2, batch_size=2, patch_size=8, threads=1))
    path = bundle_run(tmp_path / "run", tmp_path / "bundle", notes="a test run")
    assert default_weights_path(tmp_path / "bundle") == path
    assert default_weights_info(tmp_path / "bundle") == {
        "trained_steps": 2, "train_data": ["T3"], "train_images": 3, "batch_size": 2, "patch_size": 8,
        "loss": "L1", "notes": "a test run"}
    # A run continued from earlier weights (init_from) counts their steps too.
    bundle_run(tmp_path / "run", tmp_path / "cont", earlier_steps=16_000)
    assert default_weights_info(tmp_path / "cont")["trained_steps"] == 16_002
    with pytest.raises(ValueError, match="earlier_steps must be an int >= 0, got -1"):
        bundle_run(tmp_path / "run", tmp_path / "cont", earlier_steps=-1)
    run_model = fastsr.load(tmp_path / "run" / "checkpoint.pt")
    assert torch.equal(fastsr.load(path).head[0].weight, run_model.head[0].weight.half().float())
    torch.save({"format": "other"}, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(fastsr.CheckpointError, match="not a fastsr train checkpoint"):
        bundle_run(tmp_path / "run", tmp_path / "bundle2")
    torch.save({"format": "fastsr-train", "step": 3}, tmp_path / "run" / "checkpoint.pt")  # no options
    with pytest.raises(fastsr.CheckpointError, match="incomplete fastsr train checkpoint"):
        bundle_run(tmp_path / "run", tmp_path / "bundle2")
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(fastsr.CheckpointError, match="cannot read"):
        bundle_run(tmp_path / "run", tmp_path / "bundle2")
    with pytest.raises(FileNotFoundError):
        bundle_run(tmp_path / "nowhere", tmp_path / "bundle2")
    assert not (tmp_path / "bundle2").exists()


def test_shipped_bundle_if_present_is_valid():
    try:
        path = default_weights_path()
    except DefaultWeightsMissing:
        pytest.skip("no default weights bundled in this checkout")
    model = fastsr.load(path)
    assert model.config.scales == (2, 3, 4) and model.config.n_resblocks == 16
    from fastsr.bundle import default_weights_info

    info = default_weights_info()  # the shipped bundle says how it was made
    assert info["trained_steps"] > 0 and info["train_data"] == ["T91", "BSD200"] and info["train_images"] == 291


def _readme_default_weights_table() -> dict[tuple[str, int], tuple[tuple[float, float], tuple[float, float]]]:
    """``{(set, scale): ((bicubic PSNR, SSIM), (fastsr PSNR, SSIM))}`` from the README's Default weights table."""
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Default weights", 1)[1].split("\n## ", 1)[0]
    number = r"(\d+\.\d+) / (\d\.\d+)"
    # A third column (the x8 self-ensemble, measured once: too slow to recompute in CI) may follow.
    rows = re.findall(rf"^\| (\w+) \| x(\d) \| {number} \| {number} \|(?: {number} \|)?$", section,
                      flags=re.MULTILINE)
    return {(name, int(s)): ((float(a), float(b)), (float(c), float(d))) for name, s, a, b, c, d, *_ in rows}


def test_readme_table_is_what_fastsr_eval_gives_for_the_shipped_weights(data_dir):
    """The README's table for the bundled model, recomputed (about a minute and a half on 2 CPU cores)."""
    try:
        path = default_weights_path()
    except DefaultWeightsMissing:
        pytest.skip("no default weights bundled in this checkout")
    table = _readme_default_weights_table()
    assert set(table) == {(name, s) for name in ("Set5", "Set14", "B100") for s in (2, 3, 4)}
    results = evaluate(data_dir, ("Set5", "Set14", "B100"), (2, 3, 4), model=fastsr.load(path))
    for (name, s), rows in table.items():
        for row, (psnr, ssim) in zip(("bicubic", "model"), rows):
            got = results[row][name][s]
            # The README shows 2 decimals of PSNR and 4 of SSIM: rounding, plus float-summation order across
            # CPUs, keeps a correct table within these.
            assert got.psnr == pytest.approx(psnr, abs=0.006), (row, name, s)
            assert got.ssim == pytest.approx(ssim, abs=6e-5), (row, name, s)
    if cpu_bf16_isa() is None:
        return  # the bf16 quality guard below needs native bf16 (the CPU default falls back to fp32)
    # The CPU bf16 mode's quality guard: at most 0.01 dB below fp32 on every set and scale (README, "CPU
    # precision"). About 1.5 more minutes.
    bf16 = evaluate(data_dir, ("Set5", "Set14", "B100"), (2, 3, 4), model=fastsr.load(path), precision="bf16",
                    bicubic_row=False)
    for name, s in table:
        delta = bf16["model"][name][s].psnr - results["model"][name][s].psnr
        assert delta >= -0.01, (name, s, delta)


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"trained_steps": 15000, "train_data": ["T91", "BSD200"], "train_images": 291, "batch_size": 16,
          "patch_size": 48, "notes": "bf16 on CPU"},
         ["trained 15,000 steps on T91 + BSD200 (291 images), batch 16, 48px LR patches", "bf16 on CPU"]),
        ({}, []),
        # Malformed values (hand-edited metadata) are described as far as they can be, never a crash.
        ({"trained_steps": "15000", "notes": 3}, []),
        ({"trained_steps": 7, "train_data": "T91", "train_images": True},
         ["trained 7 steps on ?, batch ?, ?px LR patches"]),
    ],
)
def test_fastsr_info_describes_provenance(info, expected):
    from fastsr.cli import _provenance_lines

    assert _provenance_lines(info) == expected
