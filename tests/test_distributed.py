"""``fastsr.distributed.upscale_dataset`` / ``fastsr upscale --ray`` (issue 12) on a local Ray instance (CPU):
the outputs equal the single-process CLI's, file for file; bad files are reported while the rest go on;
a killed run resumes; a worker that raises or dies is retried without losing or rewriting outputs; bad
arguments fail before any work. One Ray instance for the module (2 CPUs, as on the CI machines), which
each call joins and leaves running."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, features

import fastsr
import fastsr.distributed as dist
from fastsr.cli import main
from fastsr.distributed import Summary, upscale_dataset
from fastsr.models import EDSRConfig, build

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ray_instance():
    """A 2-CPU Ray instance for the whole module; its GCS address."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    # The failing workers below are defined here; Ray's workers get them by value, not by importing tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray.get_runtime_context().gcs_address
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def checkpoint(work):
    torch.manual_seed(0)
    return str(fastsr.save(build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)), work / "tiny.safetensors"))


def _rand(rng, *shape, high=256, dtype=np.uint8):
    return rng.integers(0, high, shape, dtype=dtype)


@pytest.fixture(scope="module")
def folder(work):
    """25 files of mixed kinds: 8-bit RGB / RGBA / gray / gray+alpha / bilevel, 16-bit gray (PNG, TIFF), JPEG
    (RGB, gray, CMYK, EXIF-rotated, one named .png), BMP, TIFF, WebP, palettes with and without
    transparency, an ICC profile; two inputs that write the same output; one corrupt and one truncated."""
    d = work / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    save = lambda a, name, **kw: Image.fromarray(a).save(d / name, **kw)  # noqa: E731
    save(_rand(rng, 10, 14, 3), "rgb_a.png")
    save(_rand(rng, 17, 9, 3), "rgb_b.png")
    save(_rand(rng, 12, 12, 3), "rgb_c.png")
    save(_rand(rng, 10, 14, 4), "rgba.png")
    save(_rand(rng, 11, 13), "gray.png")
    Image.fromarray(_rand(rng, 9, 10, 2)[..., 0]).convert("LA").save(d / "gray_alpha.png")
    Image.fromarray(_rand(rng, 10, 14) > 127).save(d / "bilevel.png")
    save(_rand(rng, 10, 14, high=65536, dtype=np.uint16), "deep.png")
    save(_rand(rng, 8, 12, high=65536, dtype=np.uint16), "deep.tif")
    save(_rand(rng, 16, 16, 3), "photo.jpg", quality=90)
    save(_rand(rng, 16, 16), "photo_gray.jpeg")
    Image.fromarray(_rand(rng, 16, 8, 3)).convert("CMYK").save(d / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    save(_rand(rng, 8, 16, 3), "rotated.jpg", exif=exif)
    save(_rand(rng, 16, 16, 3), "mislabeled.png", format="JPEG")  # a JPEG named .png: written as JPEG, .png
    save(_rand(rng, 10, 14, 3), "bitmap.bmp")
    save(_rand(rng, 10, 14, 3), "scan.tif")
    save(_rand(rng, 10, 14, 4), "scan_rgba.tiff")
    if features.check("webp"):
        save(_rand(rng, 10, 14, 3), "web.webp")
        save(_rand(rng, 10, 14, 4), "web_alpha.webp")
    Image.fromarray(_rand(rng, 10, 14, 3)).convert("P").save(d / "palette.png")
    gif = Image.fromarray(_rand(rng, 10, 14, 3)).convert("P")
    gif.putpixel((0, 0), 0)
    gif.save(d / "anim.gif", transparency=0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    save(_rand(rng, 10, 14, 3), "icc.png", icc_profile=icc)
    Image.fromarray(_rand(rng, 10, 14, 3)).convert("P").save(d / "dup.gif")  # -> dup.png, before dup.png
    save(_rand(rng, 10, 14, 3), "dup.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    data = (d / "rgb_a.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "notes.txt").write_text("not an image, and not picked up")
    return d


@pytest.fixture(scope="module")
def reference(work, folder, checkpoint):
    """The single-process CLI's outputs (one torch thread, as each Ray worker here) and its error lines."""
    out = work / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        err = run_main(["upscale", str(folder), "-s", "2", "--model", checkpoint, "-o", str(out)])
    finally:
        torch.set_num_threads(threads)
    errors = [line.removeprefix("fastsr upscale: error: ") for line in err.splitlines() if ": error: " in line]
    return out, errors


def run_main(argv) -> str:
    """Run the CLI in this process; its stderr."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        main(argv)
    return err.getvalue()


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def assert_same_outputs(out: Path, ref: Path) -> None:
    """The same names, formats, modes and pixels as the CLI's (and the same bytes: the encoders are
    deterministic)."""
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        with Image.open(ref / name) as a, Image.open(out / name) as b:
            assert (b.format, b.mode, b.size) == (a.format, a.mode, a.size), name
            assert np.array_equal(np.asarray(b), np.asarray(a)), name
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


# ------------------------------------------------------------------------------------------ the runs


def test_outputs_equal_the_cli_and_bad_files_are_reported(ray_instance, work, folder, checkpoint, reference):
    import ray

    ref, cli_errors = reference
    n_inputs = len([p for p in folder.iterdir() if p.suffix != ".txt"])
    assert n_inputs >= 20
    # The CLI: the corrupt and truncated files, and dup.png (dup.gif, first, writes dup.png) failed.
    assert len(cli_errors) == 3, cli_errors
    out = work / "ray-out"
    summary = upscale_dataset(folder, out, 2, model=checkpoint, num_workers=2, batch_size=4, progress=False)
    assert ray.is_initialized()  # the module's instance: joined, not shut down
    assert isinstance(summary, Summary)
    assert (summary.done, summary.skipped, summary.failed) == (n_inputs - 3, 0, 3)
    assert_same_outputs(out, ref)
    failed = {Path(f.input).name: f.reason for f in summary.failures}
    assert sorted(failed) == ["corrupt.png", "dup.png", "truncated.png"]
    assert failed["dup.png"] == f"{folder / 'dup.png'}: another input is already written to {out / 'dup.png'}"
    assert f"{folder / 'dup.png'}: another input is already written to {ref / 'dup.png'}" in cli_errors
    for name in ("corrupt.png", "truncated.png"):
        assert failed[name].startswith(f"cannot read image {folder / name}: ")
        assert any(e.startswith(f"cannot read image {folder / name}: ") for e in cli_errors)
    assert leftovers(out) == []


def test_a_killed_run_resumes_to_the_same_outputs(ray_instance, work, folder, checkpoint, reference):
    """Kill the driver (SIGKILL) once some outputs exist; a re-run (through a file:// URI this time) skips
    the complete ones, does the rest, and leaves the CLI's files and no temporaries."""
    ref, _ = reference
    out = work / "resumed"
    child = textwrap.dedent("""
        import sys, time
        import fastsr.distributed as d

        class Slow(d._Worker):  # a second per batch of two: time to kill the run halfway
            def __call__(self, batch):
                time.sleep(1.0)
                return super().__call__(batch)

        d._WORKER = Slow
        d.upscale_dataset(sys.argv[1], sys.argv[2], 2, model=sys.argv[3], num_workers=1, batch_size=2,
                          threads_per_worker=1, ray_address=sys.argv[4], progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child, str(folder), str(out), checkpoint, ray_instance],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    total = len(list(ref.iterdir()))
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = [p for p in out.glob("*") if not p.name.startswith(".")] if out.is_dir() else []
            if len(done) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    partial = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert 3 <= len(partial) < total
    (out / ".rgb_a.png.0123456789abcdef.tmp").write_bytes(b"half an image")  # as a killed writer leaves them

    summary = upscale_dataset(folder.as_uri() + "/", out, 2, model=checkpoint, num_workers=2, batch_size=4,
                              progress=False)
    assert summary.skipped >= len(partial)
    assert summary.done + summary.skipped == total
    assert summary.failed == 3
    assert_same_outputs(out, ref)
    assert leftovers(out) == []


class _FailOnce(dist._Worker):
    """Upscales and writes its first batch, then fails before returning it (once per run: a marker file)."""

    def __call__(self, batch):
        result = super().__call__(batch)
        marker = Path(self.plan["output_dir"] + ".failed")
        try:
            with open(marker, "x") as f:  # the outputs this attempt renamed into place, with their inodes
                json.dump({o: os.stat(o).st_ino for o, st in zip(result["output"], result["status"])
                           if st == "done"}, f)
        except FileExistsError:
            return result
        self.fail()

    def fail(self):
        raise NotImplementedError


class _RaisesOnce(_FailOnce):
    def fail(self):
        raise RuntimeError("a worker failing on purpose")


class _DiesOnce(_FailOnce):
    def fail(self):
        os._exit(1)


@pytest.mark.parametrize("worker,overwrite", [(_RaisesOnce, False), (_DiesOnce, True)], ids=["raises", "dies-overwrite"])
def test_a_failing_worker_is_retried_and_nothing_is_lost_or_rewritten(ray_instance, work, folder, checkpoint,
                                                                        reference, monkeypatch, worker, overwrite):
    ref, _ = reference
    out = work / f"retried-{worker.__name__}"
    before = {}
    if overwrite:  # outputs already there (a previous run's): each is replaced exactly once
        shutil.copytree(ref, out)
        before = {p.name: p.stat().st_ino for p in out.iterdir()}
    monkeypatch.setattr(dist, "_WORKER", worker)
    summary = upscale_dataset(folder, out, 2, model=checkpoint, num_workers=2, batch_size=4, overwrite=overwrite,
                              progress=False)
    first = json.loads(Path(str(out) + ".failed").read_text())
    assert len(first) >= 3  # the failed attempt had written its batch
    # The retry found those outputs complete and left them alone (the same files), counting them as done.
    assert {o: os.stat(o).st_ino for o in first} == first
    total = len(list(ref.iterdir()))
    assert (summary.done, summary.skipped, summary.failed) == (total, 0, 3)
    assert_same_outputs(out, ref)
    if overwrite:
        assert all(p.stat().st_ino != before[p.name] for p in out.iterdir())  # every old output replaced
    assert leftovers(out) == []


class _DiesOnRgbB(dist._Worker):
    """Dies whenever its batch holds rgb_b.png: an input that kills its worker (a decoder crash, the OOM
    killer) every time."""

    def __call__(self, batch):
        if any(str(name).endswith("rgb_b.png") for name in batch["name"]):
            os._exit(1)
        return super().__call__(batch)


def test_a_batch_that_kills_every_attempt_is_reported_and_the_rest_go_on(ray_instance, work, folder, checkpoint,
                                                                         reference, monkeypatch):
    ref, _ = reference
    out = work / "poisoned"
    monkeypatch.setattr(dist, "_WORKER", _DiesOnRgbB)
    summary = upscale_dataset(str(folder / "rgb_*.png"), out, 2, model=checkpoint, num_workers=1, batch_size=1,
                              progress=False)
    assert (summary.done, summary.skipped, summary.failed) == (2, 0, 1)
    failure = summary.failures[0]
    assert failure.input == str(folder / "rgb_b.png")
    assert f"its batch failed {dist.MAX_TASK_RETRIES + 1} times" in failure.reason
    assert sorted(p.name for p in out.iterdir()) == ["rgb_a.png", "rgb_c.png"]
    assert (out / "rgb_a.png").read_bytes() == (ref / "rgb_a.png").read_bytes()


def test_an_input_is_never_an_output(ray_instance, tmp_path, checkpoint):
    """``-o`` the input folder itself: every output would be its input, refused as the CLI refuses it (not
    skipped as complete), even with overwrite; the inputs are untouched."""
    rng = np.random.default_rng(3)
    Image.fromarray(_rand(rng, 10, 14, 3)).save(tmp_path / "a.png")
    Image.fromarray(_rand(rng, 10, 14, 3)).save(tmp_path / "b.jpg")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    summary = upscale_dataset(tmp_path, tmp_path, 2, model=checkpoint, overwrite=True, progress=False)
    assert (summary.done, summary.skipped) == (0, 0)
    assert sorted(f.reason for f in summary.failures) == [
        f"refusing to overwrite the input {tmp_path / n}" for n in ("a.png", "b.jpg")]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ----------------------------------------------------------------------------- errors before any work


def test_bad_arguments_fail_before_any_work(ray_instance, work, folder, checkpoint):
    out = work / "never"
    with pytest.raises(ValueError, match="input not found: .*missing"):
        upscale_dataset([folder, work / "missing"], out, 2, model=checkpoint)
    with pytest.raises(ValueError, match="input not found: file://"):
        upscale_dataset((work / "missing").as_uri(), out, 2, model=checkpoint)
    afile = work / "a-file"
    afile.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        upscale_dataset(folder, afile, 2, model=checkpoint)
    with pytest.raises(ValueError, match="the model has no x3"):
        upscale_dataset(folder, out, 3, model=checkpoint)
    with pytest.raises(ValueError, match="not a Ray cluster address"):
        upscale_dataset(folder, out, 2, model=checkpoint, ray_address="no address")
    with pytest.raises(ValueError, match="GPU"):
        upscale_dataset(folder, out, 2, model=checkpoint, gpus_per_worker=1)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="127.0.0.1:1"):
        upscale_dataset(folder, out, 2, model=checkpoint, ray_address="127.0.0.1:1")
    assert time.monotonic() - start < 30
    assert not out.exists()  # nothing was created


def test_cli_ray_usage_errors(ray_instance, work, folder, checkpoint, capsys):
    out = str(work / "cli-never")
    cases = [
        (["--ray", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
        (["--ray", "--device", "cpu"], "--device does not go with --ray"),
        (["--workers", "2"], "go with --ray"),
    ]
    for extra, message in cases:
        assert main(["upscale", str(folder), "-s", "2", "--model", checkpoint, "-o", out, *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["upscale", "--ray", str(folder), "-s", "2", "--model", checkpoint, "-o", out]) == 2
    assert "put INPUTs before --ray" in capsys.readouterr().err
    assert main(["upscale", str(folder), "-s", "2", "--model", checkpoint, "--ray"]) == 2
    assert "--ray needs -o DIR" in capsys.readouterr().err
    assert not Path(out).exists()


def test_cli_ray_end_to_end_on_a_glob(ray_instance, work, folder, checkpoint, reference, capsys):
    """The CLI's --ray path: counts on stderr, failures by name, exit status; a second run skips all."""
    ref, _ = reference
    out = work / "cli-out"
    argv = ["upscale", str(folder / "rgb_*.png"), str(folder / "corrupt.png"), "-s", "2", "--model", checkpoint,
            "-o", str(out), "--ray", "--workers", "1", "--batch-size", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "fastsr upscale: 3 done, 0 skipped (complete outputs), 1 failed, of 4 images" in err
    assert f"cannot read image {folder / 'corrupt.png'}" in err
    for name in ("rgb_a.png", "rgb_b.png", "rgb_c.png"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()
    assert main(argv[:2] + argv[3:]) == 0
    assert "0 done, 3 skipped (complete outputs), 0 failed, of 3 images" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- without Ray at all


def test_inputs_by_uri_expand_as_folders_and_globs(folder):
    """file:// URIs go through pyarrow's filesystems as s3:// and gs:// do (no Ray needed)."""
    items, filesystems, errors = dist._plan_inputs([folder.as_uri(), folder.as_uri() + "/rgb_*.png",
                                                    str(folder / "gray.png")])
    assert errors == []
    names = [i.name for i in items]
    assert names[0] == folder.as_uri() + "/anim.gif"  # the folder's images, sorted, hidden and .txt skipped
    assert not any(n.endswith(".txt") for n in names)
    assert names[-4:] == [folder.as_uri() + f"/rgb_{c}.png" for c in "abc"] + [str(folder / "gray.png")]
    assert [i.index for i in items] == list(range(len(items)))
    assert len(filesystems) == 2 and items[-1].fs == -1
    _, _, errors = dist._plan_inputs([folder.as_uri() + "/nothing_*.png", (folder / "missing.png").as_uri()])
    assert errors == [f"no files match {folder.as_uri()}/nothing_*.png",
                      f"input not found: {(folder / 'missing.png').as_uri()}"]


def test_stale_temporaries_are_recognised(tmp_path):
    for name in (".a.png.0123456789abcdef.tmp", ".b.png.fedcba9876543210.tmp", "a.png", ".hidden.png",
                 ".c.png.0123.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert dist._remove_stale_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.png.0123.tmp", ".hidden.png", "a.png"]


def test_without_ray_the_error_says_what_to_install(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["ray"] = None  # as if not installed
        from fastsr.cli import main
        sys.exit(main(["upscale", sys.argv[1], "-s", "2", "-o", sys.argv[2], "--ray"]))
    """)
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img)
    result = subprocess.run([sys.executable, "-c", code, str(img), str(tmp_path / "out")], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    assert "pip install 'fastsr[ray]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
