"""The ``fastsr`` command: ``--version``, ``info`` and ``upscale``.

Errors the user can fix (bad arguments, unreadable files, a scale the model lacks) print one line to stderr
and exit with status 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__

EXIT_USAGE = 2


class UsageError(Exception):
    """An error caused by the command's input, reported without a traceback."""


def _cmd_info(args: argparse.Namespace) -> int:
    from .system import info
    from .weights import DefaultWeightsMissing, default_weights_path

    data = info()
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key == "backends":
            continue
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{key:<{width}}  {shown}")
    print("backends:")
    for b in data["backends"]:
        print(f"  {b.name:<10} {'yes' if b.available else 'no ':<4} {b.reason}")
    try:
        print(f"default weights: {default_weights_path()}")
    except DefaultWeightsMissing as e:
        print(f"default weights: none ({e})")
    return 0


def _load_model(spec: str | None):
    from .checkpoint import CheckpointError, load
    from .weights import DefaultWeightsMissing, default_weights_path

    try:
        path = Path(spec) if spec else default_weights_path()
        return load(path)
    except (DefaultWeightsMissing, FileNotFoundError, CheckpointError) as e:
        raise UsageError(str(e)) from e


def _upscale_image(model, path: Path, scale: int):
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from .models import MDSR

    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise UsageError(f"cannot read image {path}: {e}") from e
    if min(rgb.size) == 0:
        raise UsageError(f"image {path} is empty ({rgb.size[0]}x{rgb.size[1]})")
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1).unsqueeze(0)
    x = x * (model.config.rgb_range / 255.0)
    with torch.inference_mode():
        y = model(x, scale) if isinstance(model, MDSR) else model(x)
    # Quantize once: scale to 8 bits, clamp, round half to even (torch.round), as EDSR-PyTorch.
    y = (y * (255.0 / model.config.rgb_range)).clamp_(0, 255).round_()
    return Image.fromarray(y[0].permute(1, 2, 0).to(torch.uint8).numpy())


def _save_atomic(img, out: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=out.suffix)
    os.close(fd)
    try:
        img.save(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cmd_upscale(args: argparse.Namespace) -> int:
    from .example import example_path
    from .models import MDSR

    if args.example == (args.input is not None):
        raise UsageError("give exactly one of INPUT or --example")
    src = example_path() if args.example else Path(args.input)
    out = Path(args.output) if args.output else src.with_name(f"{src.stem}_x{args.scale}{src.suffix}")
    if args.example and not args.output:
        out = Path.cwd() / f"example_x{args.scale}.png"
    if not src.is_file():
        raise UsageError(f"input not found: {src}")
    if out.resolve() == src.resolve():
        raise UsageError(f"refusing to overwrite the input {src}")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise UsageError(f"output folder does not exist: {out.parent}")
    model = _load_model(args.model)
    scales = model.config.scales
    if args.scale not in scales:
        raise UsageError(f"the model has no x{args.scale}; it upscales by {', '.join(f'x{s}' for s in scales)}")
    if not isinstance(model, MDSR) and args.scale != model.config.scale:
        raise UsageError(f"the model upscales by x{model.config.scale}, not x{args.scale}")
    _save_atomic(_upscale_image(model, src, args.scale), out)
    print(out)
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate, format_table, to_json

    sets = [s for s in args.sets.split(",") if s]
    model = None if args.bicubic_only else _load_model(args.model)
    try:
        results = evaluate(args.data, sets, args.scale, model=model, ensemble=args.ensemble, show_progress=True)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e
    label = "fastsr" + ("+" if args.ensemble else "")
    if args.model:
        label = Path(args.model).stem + ("+" if args.ensemble else "")
    print(format_table(results, {"model": label}))
    if args.json:
        payload = {"model": args.model or ("bundled default" if model is not None else None),
                   "ensemble": args.ensemble, "protocol": "Y channel, shave = scale", "results": to_json(results)}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import logging

    from .train import TrainOptions, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        options = TrainOptions(
            model=args.model, data=tuple(args.data), out=args.out, steps=args.steps, batch_size=args.batch_size,
            patch_size=args.patch_size, lr=args.lr, lr_halve_every=args.lr_halve_every, seed=args.seed,
            save_every=args.save_every, val_dir=args.val_dir, val_every=args.val_every, device=args.device,
            amp=args.amp, init_from=args.init_from, resume=args.resume, threads=args.threads,
        )
        summary = train(options)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from e
    print(f"trained to step {summary['step']} (last loss {summary['loss']:.4f}); weights: {summary['weights']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsr", description="EDSR / MDSR super-resolution.")
    parser.add_argument("--version", action="version", version=f"fastsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="versions, devices and the backends that can run here")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("upscale", help="upscale an image")
    p.add_argument("input", nargs="?", metavar="INPUT", help="image file")
    p.add_argument("--example", action="store_true", help="upscale the bundled example image")
    p.add_argument("-s", "--scale", type=int, default=4, help="upscaling factor (default 4)")
    p.add_argument("-o", "--output", help="output file (default: INPUT_x<scale>.<ext>)")
    p.add_argument("--model", help="checkpoint (.pt/.pth/.safetensors); default: the bundled weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_upscale)

    p = sub.add_parser("eval", help="PSNR / SSIM on benchmark sets (paper protocol), with a bicubic row")
    p.add_argument("--data", required=True, help="folder holding the sets (each with HR/ and LR_bicubic/)")
    p.add_argument("--sets", default="Set5,Set14,B100", help="comma-separated set names")
    p.add_argument("--scale", type=_int_list, default=[2, 3, 4], help="comma-separated scales (default 2,3,4)")
    p.add_argument("--model", help="checkpoint; default: the bundled weights")
    p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (the paper's '+')")
    p.add_argument("--bicubic-only", action="store_true", help="only the bicubic row")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("train", help="train a network with the paper's recipe")
    p.add_argument("--model", default="mdsr-baseline", help="preset name (default mdsr-baseline)")
    p.add_argument("--data", nargs="+", required=True, help="folders of HR training images")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, model.safetensors, log.jsonl)")
    p.add_argument("--steps", type=int, required=True, help="total steps (a resumed run continues to this)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=48, help="LR patch side (default 48)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-halve-every", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--val-dir", help="benchmark set folder for validation PSNR (e.g. .../Set5)")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["bf16", "fp16"], help="CUDA autocast dtype")
    p.add_argument("--init-from", help="checkpoint to start from (all but the upsampler)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as e:
        print(f"fastsr {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
