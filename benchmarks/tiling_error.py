"""Approximate-mode tiling: how far a halo smaller than the receptive field moves the output.

    python benchmarks/tiling_error.py --data ../shared/data [--set Set5] [--scales 2,3,4] [--tile 64]
                                      [--halos 0,4,8,12,16] [--model CHECKPOINT] [--json OUT]

For every stored LR image of the set, each halo's uint8 output is compared with exact tiling (halo = the
receptive field, which equals the untiled result) at the same tile size. Per halo and scale it pools all
images: the largest error in 8-bit levels, the share of values that differ, and the PSNR against the exact
output. The Markdown table it prints (ranges over the scales) is the README's approximate-mode table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def measure(data: Path, set_name: str, scales: list[int], tile: int, halos: list[int], model=None) -> dict:
    """``{halo: {scale: {"max_error", "differ_fraction", "psnr"}}}`` against exact tiling."""
    import fastsr
    from fastsr.imageio import read_pixels

    upscaler = fastsr.Upscaler(model, precision="fp32")
    results: dict[int, dict[int, dict[str, float]]] = {h: {} for h in halos}
    for s in scales:
        paths = sorted((data / set_name / "LR_bicubic" / f"X{s}").glob("*.png"))
        if not paths:
            raise FileNotFoundError(f"no LR images in {data / set_name / 'LR_bicubic' / f'X{s}'}")
        exact = [upscaler(read_pixels(p, gray=False), s, tile=tile) for p in paths]
        for h in halos:
            max_err, n_differ, sq_err, n_values = 0, 0, 0.0, 0
            for p, ref in zip(paths, exact):
                out = upscaler(read_pixels(p, gray=False), s, tile=tile, halo=h)
                diff = np.abs(out.astype(np.int64) - ref.astype(np.int64))
                max_err = max(max_err, int(diff.max()))
                n_differ += int(np.count_nonzero(diff))
                sq_err += float(np.sum(diff.astype(np.float64) ** 2))
                n_values += diff.size
            mse = sq_err / n_values
            results[h][s] = {"max_error": max_err, "differ_fraction": n_differ / n_values,
                             "psnr": 10 * math.log10(255**2 / mse) if mse else math.inf}
    return results


def _span(values: list[float], fmt: str) -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def table(results: dict) -> str:
    lines = ["| halo | largest error (8-bit levels) | values that differ | PSNR against exact |",
             "|---|---|---|---|"]
    for h, per_scale in results.items():
        rows = list(per_scale.values())
        fractions = [100 * r["differ_fraction"] for r in rows]
        differ = "< 0.005%" if max(fractions) < 0.005 else _span(fractions, "{:.2g}") + "%"
        finite = [r["psnr"] for r in rows if math.isfinite(r["psnr"])]
        psnr = "identical" if not finite else _span(finite, "{:.0f}") + " dB"
        if finite and len(finite) < len(rows):
            psnr += " (identical at some scales)"
        lines.append(f"| {h} | {_span([r['max_error'] for r in rows], '{}')} | {differ} | {psnr} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding the benchmark sets")
    parser.add_argument("--set", default="Set5")
    parser.add_argument("--scales", default="2,3,4")
    parser.add_argument("--tile", type=int, default=64, help="tile core side in input pixels")
    parser.add_argument("--halos", default="0,4,8,12,16")
    parser.add_argument("--model", help="checkpoint (default: fastsr's bundled model)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    import fastsr

    model = fastsr.load(args.model) if args.model else None
    results = measure(args.data, args.set, [int(s) for s in args.scales.split(",")], args.tile,
                      [int(h) for h in args.halos.split(",")], model)
    print(table(results))
    if args.json:
        strict = {str(h): {str(s): {k: (None if isinstance(x, float) and math.isinf(x) else x)  # JSON has no inf
                                    for k, x in r.items()} for s, r in v.items()} for h, v in results.items()}
        args.json.write_text(json.dumps(strict, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
