"""Benchmark evaluation with the paper's protocol (``fastsr eval``).

For each set (a folder with ``HR/<name>.png`` and ``LR_bicubic/X<s>/<name>x<s>.png``, the EDSR-PyTorch
"benchmark" layout) and scale: the stored LR image is super-resolved, quantized to 8 bits, and compared with
``HR`` cropped to ``s`` times the LR size, by PSNR and SSIM on the Y channel (BT.601) with ``s`` pixels
shaved, averaged per image. A bicubic row (MATLAB-compatible :func:`fastsr.resize.imresize` of the LR
image) comes with every table. An LR file missing from the folder is made from the HR image with the same
MATLAB resize that made the stored ones.

Gray images (Set14's ``bridge``): the MATLAB-era convention, used by the papers' tables, takes the gray
value as Y. The network gets the gray image on all three channels and its output is turned back into gray
by the mean of its clamped channels, rounded once (as ``fastsr.upscale``), so both rows compare gray
with gray. Expanding to RGB and applying the
Y formula instead, as EDSR-PyTorch does, scores that one image 20 log10(255/219) = 1.32 dB higher.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .engine import OptimizedSR, optimize
from .ensemble import self_ensemble
from .imageio import read_pixels
from .metrics import psnr, ssim
from .models import MDSR
from .resize import imresize, modcrop

BENCHMARK_SETS = ("Set5", "Set14", "B100")


def benchmark_pairs(set_dir: str | os.PathLike, scale: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR, HR cropped to scale x LR size) for every HR image of a benchmark folder."""
    set_dir = Path(set_dir)
    hr_dir = set_dir / "HR"
    if not hr_dir.is_dir():
        raise FileNotFoundError(f"no HR folder in {set_dir}")
    paths = sorted(hr_dir.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"no PNG images in {hr_dir}")
    for hr_path in paths:
        hr = read_pixels(hr_path)
        lr_path = set_dir / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
        lr = read_pixels(lr_path) if lr_path.is_file() else imresize(modcrop(hr, scale), 1 / scale)
        yield hr_path.stem, lr, hr[: lr.shape[0] * scale, : lr.shape[1] * scale]


@torch.no_grad()
def super_resolve(model: torch.nn.Module, lr: np.ndarray, scale: int, *, ensemble: bool = False) -> np.ndarray:
    """Run a reference network (or its ``fastsr.optimize`` engine) on one uint8 image (HxW gray or HxWx3)
    and quantize once to uint8.

    Gray goes through the network on three channels and comes back as the mean of the clamped channels.
    Quantization: clamp to [0, 255], round half to even (torch.round) once, as EDSR-PyTorch.
    """
    gray = lr.ndim == 2
    rgb = np.repeat(lr[..., None], 3, axis=2) if gray else lr
    engine = isinstance(model, OptimizedSR)
    param = None if engine else next(model.parameters())
    device, dtype = (model.device, torch.float32) if engine else (param.device, param.dtype)
    rgb_range = model.config.rgb_range
    x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].to(device, dtype)
    x = x * (rgb_range / 255)

    def run(t: torch.Tensor) -> torch.Tensor:
        return model(t, scale) if isinstance(model, (MDSR, OptimizedSR)) else model(t)

    y = self_ensemble(run, x) if ensemble else run(x)
    y = (y.float() * (255 / rgb_range)).clamp(0, 255)
    if gray:  # the channel mean of the clamped output, rounded once (as fastsr.upscale)
        y = y.mean(dim=1, keepdim=True)
    out = y.round()[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()
    return out[..., 0] if gray else out


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: MATLAB-compatible upscaling of the LR image (uint8 out)."""
    return imresize(lr, scale)


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float
    n_images: int


def score(set_dir: str | os.PathLike, scale: int, upscale, *, progress=None) -> Score:
    """Mean Y-PSNR / SSIM (shave = scale) of ``upscale(lr, scale)`` over a benchmark folder."""
    psnrs, ssims = [], []
    for _, lr, hr in benchmark_pairs(set_dir, scale):
        sr = upscale(lr, scale)
        if sr.shape != hr.shape:
            raise ValueError(f"upscaled image has shape {sr.shape}, expected {hr.shape}")
        psnrs.append(psnr(sr, hr, shave=scale))
        ssims.append(ssim(sr, hr, shave=scale))
        if progress is not None:
            progress.update(1)
    return Score(float(np.mean(psnrs)), float(np.mean(ssims)), len(psnrs))


def evaluate(
    data: str | os.PathLike,
    sets: Sequence[str] = BENCHMARK_SETS,
    scales: Sequence[int] = (2, 3, 4),
    *,
    model: torch.nn.Module | None = None,
    ensemble: bool = False,
    bicubic_row: bool = True,
    show_progress: bool = False,
    precision: str = "fp32",
) -> dict[str, dict[str, dict[int, Score]]]:
    """``{"bicubic": {set: {scale: Score}}, "model": {...}}`` for the requested sets and scales.

    A reference ``model`` runs through the engine in ``precision`` (fp32 by default: the reference's numbers;
    ``"bf16"`` measures the CPU's bf16 mode); an ``optimize``d model runs as it was built."""
    from tqdm import tqdm

    data = Path(data)
    for name in sets:
        if not (data / name / "HR").is_dir():
            raise FileNotFoundError(f"benchmark set {name!r} not found: no {data / name / 'HR'}")
    if model is not None:
        for s in scales:
            model.config.require_scale(s)
    rows: dict[str, object] = {}
    if bicubic_row:
        rows["bicubic"] = bicubic
    if model is not None:
        if not isinstance(model, OptimizedSR):
            model = optimize(model, precision=precision)  # fp32: the reference's numbers, faster
        rows["model"] = lambda lr, s: super_resolve(model, lr, s, ensemble=ensemble)
    total = sum(len(list((data / n / "HR").glob("*.png"))) for n in sets) * len(scales) * len(rows)
    results: dict[str, dict[str, dict[int, Score]]] = {row: {} for row in rows}
    # disable=None: a bar only on a terminal.
    with tqdm(total=total, unit="img", disable=None if show_progress else True, leave=False) as bar:
        for row, fn in rows.items():
            for name in sets:
                results[row][name] = {}
                for s in scales:
                    bar.set_description(f"{row} {name} x{s}", refresh=False)  # which set and scale is running
                    results[row][name][s] = score(data / name, s, fn, progress=bar)
    return results


def format_table(results: dict[str, dict[str, dict[int, Score]]], labels: dict[str, str] | None = None) -> str:
    """A Markdown table like the paper's Table 3: one row per set and scale, PSNR / SSIM per method."""
    labels = {"bicubic": "Bicubic", "model": "fastsr", **(labels or {})}
    methods = list(results)
    header = "| Dataset | Scale | " + " | ".join(labels.get(m, m) for m in methods) + " |"
    lines = [header, "|---|---|" + "---|" * len(methods)]
    first = results[methods[0]]
    for name in first:
        for s in first[name]:
            cells = [f"{results[m][name][s].psnr:.2f} / {results[m][name][s].ssim:.4f}" for m in methods]
            lines.append(f"| {name} | x{s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(results: dict[str, dict[str, dict[int, Score]]]) -> dict:
    return {row: {name: {f"x{s}": vars(sc) for s, sc in per.items()} for name, per in sets.items()}
            for row, sets in results.items()}
