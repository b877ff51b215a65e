"""Quality of OpenCV's model-zoo EDSR (``EDSR_x4.pb``) under ``fastsr eval``'s protocol, run by fastsr (the
file read by ``fastsr.sources.opencv_pb.load_opencv_pb``) and, with ``--opencv``, by OpenCV's own ``dnn_superres`` on
the same LR images -- plus how far the two 8-bit outputs are apart::

    python benchmarks/opencv_zoo_quality.py --data ../shared/data [--model EDSR_x4.pb] [--sets Set5,Set14,B100]
                                            [--precision fp32] [--opencv] [--json out.json]

Protocol (``fastsr.evaluate``): the stored MATLAB-bicubic LR image is super-resolved and quantized once to
8 bits, then compared with HR cropped to s x the LR size by PSNR / SSIM on the Y channel, s pixels shaved,
averaged per image; a bicubic row comes with it. Gray images (Set14's bridge) go through both networks on
three equal channels and come back as the channel mean: fastsr averages the float channels and rounds once,
OpenCV's path averages its already-rounded 8-bit channels (at most half a level apart).

Full EDSR costs about 77 MFLOP per LR pixel: B100 at x4 (960,000 LR pixels) is about 74 TFLOP per
implementation, minutes on a small CPU (5 in fp32 on 2 cores). ``fastsr eval --model EDSR_x4.pb --scale 4``
gives the fastsr rows too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(os.environ.get("FASTSR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def opencv_upscaler(pb: Path, scale: int):
    """``upscale(lr, scale)`` for uint8 RGB / gray numpy images through OpenCV's DnnSuperResImpl (BGR)."""
    import cv2

    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(pb))
    sr.setModel("edsr", scale)

    def upscale(lr: np.ndarray, s: int) -> np.ndarray:
        if s != scale:
            raise ValueError(f"the OpenCV model upscales by x{scale}, not x{s}")
        gray = lr.ndim == 2
        rgb = np.repeat(lr[..., None], 3, axis=2) if gray else lr
        out = sr.upsample(np.ascontiguousarray(rgb[..., ::-1]))[..., ::-1]
        if gray:
            return np.round(out.astype(np.float64).mean(axis=2)).astype(np.uint8)  # half to even, once
        return np.ascontiguousarray(out)

    return upscale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with Set5/, Set14/, B100/")
    parser.add_argument("--model", type=Path, default=None, help="the .pb file (default: DATA/models/opencv/EDSR_x4.pb)")
    parser.add_argument("--sets", default="Set5,Set14,B100")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="fastsr's CPU precision")
    parser.add_argument("--opencv", action="store_true", help="also run OpenCV dnn_superres and compare")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    args = parser.parse_args(argv)

    import torch

    from fastsr.engine import optimize
    from fastsr.evaluate import Score, benchmark_pairs, bicubic, format_table, super_resolve
    from fastsr.metrics import psnr, ssim
    from fastsr.sources.opencv_pb import load_opencv_pb

    pb = args.model or args.data / "models" / "opencv" / "EDSR_x4.pb"
    model = load_opencv_pb(pb)
    scale = model.config.scale
    engine = optimize(model, precision=args.precision)
    rows = {"bicubic": lambda lr, s: bicubic(lr, s), "model": lambda lr, s: super_resolve(engine, lr, s)}
    if args.opencv:
        rows["opencv"] = opencv_upscaler(pb, scale)
    per: dict[str, dict[str, list[tuple[float, float]]]] = {row: {} for row in rows}
    agreement: dict[str, dict[str, float]] = {}
    for name in args.sets.split(","):
        diffs, values = [], 0
        for image, lr, hr in benchmark_pairs(args.data / name, scale):
            outs = {}
            for row, fn in rows.items():
                outs[row] = fn(lr, scale)
                per[row].setdefault(name, []).append((psnr(outs[row], hr, shave=scale), ssim(outs[row], hr, shave=scale)))
            if "opencv" in outs:
                d = np.abs(outs["model"].astype(int) - outs["opencv"].astype(int))
                diffs.append((int(d.max()), int(np.count_nonzero(d)), int(np.count_nonzero(d > 1))))
                values += d.size
            print(f"{name}/{image}: " + ", ".join(f"{row} {per[row][name][-1][0]:.2f} dB" for row in rows),
                  file=sys.stderr)
        if diffs:
            agreement[name] = {"max_abs_levels": max(d[0] for d in diffs), "values": values,
                               "fraction_differing": sum(d[1] for d in diffs) / values,
                               "fraction_over_one_level": sum(d[2] for d in diffs) / values}
    results = {row: {name: {scale: Score(float(np.mean([p for p, _ in v])), float(np.mean([q for _, q in v])), len(v))}
                     for name, v in sets.items()} for row, sets in per.items()}
    labels = {"model": f"fastsr ({pb.name}, {args.precision})", "opencv": f"OpenCV dnn_superres ({pb.name})"}
    print(format_table(results, labels))
    for name, a in agreement.items():
        print(f"{name}: fastsr vs OpenCV 8-bit outputs: max {a['max_abs_levels']} levels, "
              f"{a['fraction_differing']:.5%} of {a['values']} values differ, {a['fraction_over_one_level']:.5%} by more than 1")
    if args.json:
        from fastsr.evaluate import to_json

        args.json.write_text(json.dumps({"results": to_json(results), "agreement": agreement,
                                         "torch_threads": torch.get_num_threads()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
