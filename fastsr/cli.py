"""The ``fastsr`` command: ``--version``, ``info``, ``upscale``, ``eval``, ``export`` and ``train``.

Errors the user can fix (bad arguments, unreadable files, a scale the model lacks) print one line to stderr
and exit with status 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from ._files import remove_live_temps
from ._version import __version__
from .imageio import DEFAULT_MAX_PIXELS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class UsageError(Exception):
    """An error caused by the command's input, reported without a traceback."""


def _cmd_info(args: argparse.Namespace) -> int:
    from .bundle import default_weights_info
    from .checkpoint import CheckpointError
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
        provenance = default_weights_info()
    except DefaultWeightsMissing as e:
        print(f"default weights: none ({e})")
        return 0
    except CheckpointError as e:  # the weights verified by checksum; only their description is unreadable
        print(f"  (no readable provenance: {e})")
        return 0
    for line in _provenance_lines(provenance):
        print(f"  {line}")
    return 0


def _provenance_lines(info: dict) -> list[str]:
    """``fastsr info``'s description of the bundled weights from their stored provenance (any JSON values)."""
    lines = []
    steps, data, images = info.get("trained_steps"), info.get("train_data"), info.get("train_images")
    if isinstance(steps, int) and not isinstance(steps, bool):
        on = " + ".join(map(str, data)) if isinstance(data, list) and data else "?"
        count = f" ({images} images)" if isinstance(images, int) and not isinstance(images, bool) else ""
        lines.append(f"trained {steps:,} steps on {on}{count}, batch {info.get('batch_size', '?')}, "
                     f"{info.get('patch_size', '?')}px LR patches")
    if isinstance(info.get("notes"), str):
        lines.append(info["notes"])
    return lines


def _load_model(spec: str | None):
    from .checkpoint import CheckpointError
    from .sources import resolve_model
    from .weights import DefaultWeightsMissing

    try:
        return resolve_model(spec or None)
    except (DefaultWeightsMissing, FileNotFoundError, CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from e


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _cmd_upscale(args: argparse.Namespace) -> int:
    """``fastsr upscale``: files, folders and globs; one bad file does not stop the others."""
    from tqdm import tqdm

    from .example import example_path
    from .imageio import read_image, write_image
    from .inputs import OutputPlan, Source, expand_inputs, failure_reason, image_output_for, is_video, output_for
    from .upscaler import Upscaler
    from .weights import DefaultWeightsMissing

    ray_videos = args.ray is not None and bool(args.input) and all(is_video(spec) for spec in args.input)
    if args.ray is not None and not ray_videos:
        if any(is_video(spec) for spec in args.input):
            raise UsageError("--ray takes either videos (each spread over the workers) or images, not both at once")
        return _cmd_upscale_ray(args)
    if not ray_videos and (args.workers is not None or args.gpus_per_worker or args.batch_size is not None
                           or args.verbose):
        raise UsageError("--workers, --gpus-per-worker, --batch-size and --verbose go with --ray")
    if args.example == bool(args.input):
        raise UsageError("give exactly one of INPUT or --example")
    if args.example:
        sources, errors = [Source(example_path())], []
    else:
        sources, errors = expand_inputs(args.input, videos=True)
    if (args.codec is not None or args.crf is not None) and not any(is_video(s) for s in sources):
        raise UsageError("--codec and --crf apply to videos; no INPUT is one")
    if args.codec is not None:
        from .video import CODECS

        if args.codec not in CODECS:
            raise UsageError(f"unknown --codec {args.codec!r}; choose one of {', '.join(CODECS)}")
    # One INPUT that is a file (or --example): -o is a file. Otherwise -o is a folder.
    single = len(sources) == 1 and not errors and (args.example or Path(args.input[0]).is_file())
    output_is_file = single and bool(args.output) and not Path(args.output).is_dir()
    if not sources:
        raise UsageError("; ".join(errors))
    if not single and args.output:
        folder = Path(args.output)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"-o must be a folder when upscaling several images or a folder: {folder} is a file")

    try:
        upscaler = Upscaler(args.model or None, device=args.device, precision=args.precision)
        upscaler.check_scale(args.scale)
    except (DefaultWeightsMissing, FileNotFoundError, ValueError, TypeError) as e:
        raise UsageError(str(e)) from e

    outputs = OutputPlan([s.path for s in sources], overwrite=args.overwrite)
    failed = len(errors)
    total = len(sources) + len(errors)
    show_bars = sys.stderr.isatty()
    say = _Lines()

    def report(message: str) -> None:
        say.err(f"fastsr upscale: error: {message}")

    for message in errors:
        report(message)
    for src in tqdm(sources, unit="file", disable=not show_bars or len(sources) == 1):
        try:
            if is_video(src):
                from .video import output_suffix

                out = output_for(src, scale=args.scale, suffix=output_suffix(src.path, args.codec), output=args.output,
                                 output_is_file=output_is_file, default_folder=None)
                outputs.claim(out)
                if not single:
                    out.parent.mkdir(parents=True, exist_ok=True)
                for note in _upscale_one_video(args, upscaler, src, out, show_bars):
                    say.err(f"fastsr upscale: note: {src.path}: {note}")
                say.out(str(out))
                continue
            im = read_image(src.path, max_pixels=args.max_pixels or None)
            out, fmt = image_output_for(src, im, scale=args.scale, output=args.output, output_is_file=output_is_file,
                                        default_folder=Path.cwd() if args.example else None)
            outputs.claim(out)
            if not single:
                out.parent.mkdir(parents=True, exist_ok=True)
            elif not out.parent.is_dir():
                raise ValueError(f"output folder does not exist: {out.parent}")
            result = upscaler(im, args.scale, tile=args.tile, halo=args.halo, ensemble=args.ensemble,
                              max_pixels=args.max_pixels or None, progress=show_bars)
            try:
                write_image(result, out, format=fmt, overwrite=args.overwrite, icc_profile=im.info.get("icc_profile"))
            except FileExistsError:  # appeared while we were computing
                raise OutputPlan.exists_error(out) from None
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            failed += 1
            report(failure_reason(e, str(src.path)))
            continue
        say.out(str(out))  # after the work: reporting never turns a written file into a failure
    if total > 1:
        noun = "files" if any(is_video(s) for s in sources) else "images"
        say.err(f"fastsr upscale: {total - failed} of {total} {noun} upscaled" + (f", {failed} failed" if failed else ""))
    return EXIT_USAGE if failed else 0


def _upscale_one_video(args: argparse.Namespace, upscaler, src, out: Path, show_bars: bool) -> tuple[str, ...]:
    """One video INPUT (:func:`fastsr.upscale_video`, on Ray with ``--ray``): the result's notes."""
    from .video import upscale_video

    if args.ensemble or args.halo is not None:
        raise ValueError("--ensemble and --halo are for images; a video is upscaled with exact tiling only")
    ray = {} if args.ray is None else {"ray_address": args.ray, "num_workers": args.workers,
                                       "gpus_per_worker": args.gpus_per_worker}
    if ray and (args.device or args.batch_size is not None or args.verbose):
        raise ValueError("--device, --batch-size and --verbose do not go with a video on --ray")
    result = upscale_video(src.path, out, args.scale, model=upscaler, tile=args.tile, codec=args.codec,
                           crf=args.crf, overwrite=args.overwrite, progress=show_bars,
                           max_pixels=args.max_pixels or None, **ray)
    return result.notes


def _cmd_upscale_ray(args: argparse.Namespace) -> int:
    """``fastsr upscale INPUT... -o DIR --ray [ADDRESS]``: :func:`fastsr.distributed.upscale_dataset`."""
    from .distributed import parse_address, upscale_dataset
    from .weights import DefaultWeightsMissing

    try:
        parse_address(args.ray)
    except ValueError as e:
        if Path(args.ray).exists():
            raise UsageError(f"--ray took {args.ray!r} as the cluster address, but it is a file or folder: put "
                             "INPUTs before --ray, or write --ray=ADDRESS") from None
        raise UsageError(str(e)) from None
    if args.example or not args.input:
        raise UsageError("--ray upscales INPUTs (files, folders, globs or URIs such as s3://bucket/photos/), "
                         "not --example")
    if not args.output:
        raise UsageError("--ray needs -o DIR: the output folder (on storage every node sees)")
    if args.device:
        raise UsageError("--device does not go with --ray: workers use a GPU each with --gpus-per-worker 1, "
                         "else CPU threads")
    try:
        # Ray prints its raylet's notices (a worker died, a task is retried) on stdout, with no switch to turn
        # them off; --ray writes nothing there, so without --verbose stdout is the null device during the run.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(sys.stdout if args.verbose else devnull):
            summary = upscale_dataset(
                args.input, args.output, args.scale, model=args.model or None, precision=args.precision,
                num_workers=args.workers, gpus_per_worker=args.gpus_per_worker, batch_size=args.batch_size or 8,
                tile=args.tile, halo=args.halo, ensemble=args.ensemble, overwrite=args.overwrite,
                ray_address=args.ray, max_pixels=args.max_pixels or None, verbose=args.verbose)
    except (ImportError, ValueError, TypeError, OSError, DefaultWeightsMissing, RuntimeError) as e:
        raise UsageError(str(e)) from e
    say = _Lines()
    for failure in summary.failures:
        say.err(f"fastsr upscale: error: {failure.reason}")
    say.err(f"fastsr upscale: {summary.done} done, {summary.skipped} skipped (complete outputs), "
            f"{summary.failed} failed, of {summary.total} images")
    return EXIT_USAGE if summary.failed else 0


def _write_line(stream, text: str) -> None:
    """``text`` and a newline on ``stream``. File names that are not valid in the locale's encoding go out as
    the bytes they are on disk (surrogate escapes); other characters the stream cannot encode are escaped."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        data = (text + "\n").encode(encoding, "surrogateescape")
    except UnicodeEncodeError:
        data = (text + "\n").encode(encoding, "backslashreplace")
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(data.decode(encoding, "surrogateescape"))
        stream.flush()
        return
    stream.flush()
    buffer.write(data)
    buffer.flush()


class _Lines:
    """Reporting for a command that works through many files: results on stdout, errors on stderr.

    Reporting never changes the outcome of the work: a stream that was closed (``fastsr upscale in/ | head``)
    or fails ends reporting on that stream, and the work goes on. Lines go around tqdm's bars.
    """

    def __init__(self) -> None:
        self._closed: set[str] = set()

    def out(self, text: str) -> None:
        self._line("stdout", text)

    def err(self, text: str) -> None:
        self._line("stderr", text)

    def _line(self, name: str, text: str) -> None:
        if name in self._closed:
            return
        from tqdm import tqdm

        stream = getattr(sys, name)
        try:
            with tqdm.external_write_mode(file=stream):
                _write_line(stream, text)
        except (OSError, ValueError):  # BrokenPipeError, EIO, "I/O operation on closed file"
            self._closed.add(name)
            _silence(stream)


def _silence(stream) -> None:
    """Point ``stream``'s descriptor at the null device, so the interpreter's flush at exit cannot fail on it
    (the recipe of Python's signal documentation for a closed pipe)."""
    try:
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): nothing to protect
        pass


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks clean up as for Ctrl-C."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` instead of killing the process outright."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _height_width(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW with two positive integers (e.g. 270x480), got {text!r}")
    return int(parts[0]), int(parts[1])


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
        results = evaluate(args.data, sets, args.scale, model=model, ensemble=args.ensemble, show_progress=True,
                           precision=args.precision)
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


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx
    from .weights import DefaultWeightsMissing

    out = Path(args.output)
    try:
        export_onnx(args.model, out, scale=args.scale, precision=args.precision,
                    dynamic=args.static is None, size=args.static or (64, 64), overwrite=args.overwrite)
    except FileExistsError as e:
        raise UsageError(f"{e.filename or out} exists; pass --overwrite to replace it") from e
    except (ValueError, TypeError, OSError, DefaultWeightsMissing, ImportError) as e:
        raise UsageError(str(e)) from e
    shape = f"static 1x3x{args.static[0]}x{args.static[1]}" if args.static else "dynamic batch, height and width"
    print(f"wrote {out} ({args.precision}, {shape})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import logging

    from .train import TrainOptions, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        options = TrainOptions(
            model=args.model, data=tuple(args.data), out=args.out, steps=args.steps, batch_size=args.batch_size,
            patch_size=args.patch_size, lr=args.lr, lr_halve_every=args.lr_halve_every, lr_schedule=args.lr_schedule,
            lr_min=args.lr_min, warmup_steps=args.warmup_steps, seed=args.seed,
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

    p = sub.add_parser(
        "upscale", help="upscale images (files, folders, globs)",
        description="Upscale images with the bundled default model or --model. A bad file is reported and the "
                    "others are still processed; the exit status is 2 if any failed.",
    )
    p.add_argument("input", nargs="*", metavar="INPUT", help="image or video files, folders (their images and videos) or globs")
    p.add_argument("--example", action="store_true",
                   help="upscale the bundled example image (default output ./example_x<scale>.png)")
    p.add_argument("-s", "--scale", type=int, default=4, help="upscaling factor (default 4)")
    p.add_argument("-o", "--output",
                   help="one input: the output file (default INPUT_x<scale>.<ext>); several inputs or a folder: "
                        "the output folder, created if needed (default: beside each input, FOLDER_x<scale>/ for "
                        "a folder)")
    p.add_argument("--model", help="checkpoint (.pt/.pth/.safetensors, or OpenCV's EDSR_x*.pb); default: the bundled weights")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                   help="default: fp16 on CUDA; on the CPU bf16 where it has AVX512-BF16 or AMX-BF16, else fp32 "
                        "(`fastsr info` says which)")
    p.add_argument("--tile", type=_positive_int,
                   help="tile core side in input pixels (default: the largest that fits the memory budget)")
    p.add_argument("--halo", type=_nonnegative_int,
                   help="tile halo in input pixels (default: the receptive field, exact; smaller is approximate)")
    p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (8x slower, slightly better)")
    p.add_argument("--max-pixels", type=_nonnegative_int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse inputs with more pixels (default {DEFAULT_MAX_PIXELS:,}; 0: no limit)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")
    video = p.add_argument_group("videos (pip install 'fastsr[video]'): recognised by the container (.mp4, .mkv, ...)")
    video.add_argument("--codec", help="libx264 (default; .webm: libvpx-vp9), libx265, libvpx-vp9 or ffv1 (lossless, .mkv)")
    video.add_argument("--crf", type=_nonnegative_int, help="quality, lower is better (default: 18 x264, 20 x265, 24 vp9)")
    ray = p.add_argument_group("scale-out on Ray (pip install 'fastsr[ray]')")
    ray.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="upscale on Ray Data into -o DIR: a local Ray instance, or the cluster at ADDRESS "
                          "(HOST:PORT, ray://HOST:PORT or auto); INPUTs may also be URIs (s3://, gs://); a re-run "
                          "skips complete outputs")
    ray.add_argument("--workers", type=_positive_int,
                     help="Ray workers, each with the model loaded once (default: one per GPU with "
                          "--gpus-per-worker, else one per node)")
    ray.add_argument("--gpus-per-worker", type=float, default=0,
                     help="1: a GPU per worker; 0 (default): CPU workers (torch threads)")
    ray.add_argument("--batch-size", type=_positive_int, help="images per Ray task, the unit of retry (default 8)")
    ray.add_argument("--verbose", action="store_true", help="Ray's logs and progress bars")
    p.set_defaults(func=_cmd_upscale)

    p = sub.add_parser("eval", help="PSNR / SSIM on benchmark sets (paper protocol), with a bicubic row")
    p.add_argument("--data", required=True, help="folder holding the sets (each with HR/ and LR_bicubic/)")
    p.add_argument("--sets", default="Set5,Set14,B100", help="comma-separated set names")
    p.add_argument("--scale", type=_int_list, default=[2, 3, 4], help="comma-separated scales (default 2,3,4)")
    p.add_argument("--model", help="checkpoint; default: the bundled weights")
    p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble (the paper's '+')")
    p.add_argument("--bicubic-only", action="store_true", help="only the bicubic row")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="engine precision (default fp32, the reference's numbers; bf16 on CPUs with "
                        "AVX512-BF16 or AMX-BF16, fp16 on CUDA)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "export", help="export the optimized network to ONNX",
        description="Export the folded network (residual scaling, BN and mean shifts folded; pixel shuffle as "
                    "DepthToSpace) to ONNX: input 'image' NCHW float32 in [0, 255], output 'output' "
                    "NCHW float32, not clamped. One scale per file.")
    p.add_argument("model", metavar="MODEL",
                   help="a checkpoint (.pt/.pth/.safetensors) or a preset with bundled weights (mdsr-baseline)")
    p.add_argument("-s", "--scale", type=int, help="the scale to export (required for MDSR)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="weights and activations in the file (input and output stay float32)")
    p.add_argument("--static", type=_height_width, metavar="HxW",
                   help="a fixed 1x3xHxW input instead of dynamic shapes (e.g. 270x480)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("train", help="train a network with the paper's recipe")
    p.add_argument("--model", default="mdsr-baseline", help="preset name (default mdsr-baseline)")
    p.add_argument("--data", nargs="+", required=True, help="folders of HR training images")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, model.safetensors, log.jsonl)")
    p.add_argument("--steps", type=int, required=True, help="total steps (a resumed run continues to this)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=48, help="LR patch side (default 48)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-halve-every", type=int, default=200_000)
    p.add_argument("--lr-schedule", choices=["step", "cosine"], default="step",
                   help="step: halve every --lr-halve-every (the paper); cosine: --warmup-steps of linear "
                        "warm-up, then a cosine down to --lr-min at --steps")
    p.add_argument("--lr-min", type=float, default=0.0, help="the cosine schedule's final rate")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up (cosine schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--val-dir", help="benchmark set folder for validation PSNR (e.g. .../Set5)")
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["bf16", "fp16"],
                   help="autocast dtype: bf16 (CUDA, or a CPU with bf16 instructions) or fp16 (CUDA)")
    p.add_argument("--init-from", help="checkpoint to start from (all but the upsampler)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=_cmd_train)
    from .serve import add_parser as add_serve_parser
    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        with _sigterm_raises():
            return args.func(args)
    except UsageError as e:
        _Lines().err(f"fastsr {args.command}: error: {e}")
        return EXIT_USAGE
    except (KeyboardInterrupt, Terminated) as e:
        # The finally blocks on the way here removed the temporary files they own; this catches one created
        # between a signal's arrival and its try block.
        remove_live_temps()
        terminated = isinstance(e, Terminated)
        _Lines().err(f"fastsr {args.command}: {'terminated' if terminated else 'interrupted'}")
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
