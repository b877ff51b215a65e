"""Hostile but realistic input (issue 15): checkpoints whose stored config lies, foreign tensors, meta inputs,
long and undecodable file names, closed pipes, signals, read-only folders, NaN weights, huge batches,
special files, and a fuzz of ``fastsr.load`` under an address-space limit."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import fastsr
import fastsr._files as files
from fastsr.checkpoint import CheckpointError
from fastsr.cli import main
from fastsr.models import EDSRConfig, build, create

pytestmark = pytest.mark.usefixtures("one_thread")

HERE = Path(__file__).resolve().parent


def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create("edsr-baseline-x2", n_resblocks=2, n_feats=8).state_dict()


def run_cli(*args: str, cwd=None, env=None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "fastsr", *args], capture_output=True, cwd=cwd, timeout=300,
                          env=env, check=False, **kwargs)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return str(fastsr.save(build(EDSRConfig(n_resblocks=1, n_feats=8, scale=2)), tmp_path / "tiny.safetensors"))


def image(path: Path, size=(10, 14)) -> Path:
    rng = np.random.default_rng(len(os.fsencode(path.name)))
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


# ------------------------------------------------------------------------- 1. configs that lie about sizes


def inflated_files(folder: Path) -> dict[str, Path]:
    """A 2-block, 8-feature network whose stored config claims a network of gigabytes, in each fastsr format."""
    model = create("edsr-baseline-x2", n_resblocks=2, n_feats=8)
    good = fastsr.save(model, folder / "good.safetensors")
    with safe_open(str(good), "pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    claims = {"feats": {"n_feats": 3000}, "feats-huge": {"n_feats": 200_000}, "blocks": {"n_resblocks": 20_000_000},
              "colours": {"n_colors": 100_000, "rgb_mean": [0.5] * 100_000, "rgb_std": [1.0] * 100_000}}
    out = {}
    for name, claim in claims.items():
        config = {**json.loads(meta["config"]), **claim}
        save_file(tensors, folder / f"{name}.safetensors", metadata={**meta, "config": json.dumps(config)})
        out[f"{name}.safetensors"] = folder / f"{name}.safetensors"
        torch.save({"format": "fastsr", "format_version": 1, "config": config, "state_dict": model.state_dict()},
                   folder / f"{name}.pt")
        out[f"{name}.pt"] = folder / f"{name}.pt"
        torch.save({"format": "fastsr-train", "config": config, "model": model.state_dict(), "step": 1},
                   folder / f"{name}-train.pt")
        out[f"{name}-train.pt"] = folder / f"{name}-train.pt"
    return out


def test_inflated_config_is_refused_fast_with_bounded_memory(tmp_path):
    files_ = inflated_files(tmp_path)
    assert os.path.getsize(files_["feats.safetensors"]) < 30_000  # the 25 KB file
    # A fresh process, so its peak resident memory is this check's own: each load is timed, and the peak
    # after all twelve must stay near the cost of importing torch (a 3000-feature network alone is 3 GB).
    child = textwrap.dedent("""
        import json, resource, sys, time
        import fastsr
        from fastsr.checkpoint import CheckpointError
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = {}
        for path in sys.argv[1:]:
            start = time.perf_counter()
            try:
                fastsr.load(path)
                out[path] = ["loaded", 0.0]
            except CheckpointError as e:
                out[path] = [str(e), time.perf_counter() - start]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"results": out, "growth_kib": peak - base}))
    """)
    proc = subprocess.run([sys.executable, "-c", child, *map(str, files_.values())], capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, (message, seconds) in report["results"].items():
        assert "does not match the tensors" in message, (path, message)
        # Under a second, not the 5.6 s (n_feats=3000) to 60 s (20 M blocks) of building what the config claims;
        # the colour files carry 200,000 stored floats, which their parsing alone takes a good part of.
        assert seconds < 1.0, (path, seconds)
    assert report["results"][str(files_["feats.safetensors"])][1] < 0.1  # the 25 KB file
    assert "n_feats=3000 (the tensors have 8)" in report["results"][str(files_["feats.safetensors"])][0]
    assert "n_resblocks=20000000 (the tensors have 2)" in report["results"][str(files_["blocks.pt"])][0]
    assert report["growth_kib"] < 100 * 1024, report["growth_kib"]  # < 100 MiB beyond the imports


def test_inflated_config_through_the_cli_is_one_line(tmp_path):
    bad = inflated_files(tmp_path)["feats.safetensors"]
    src = image(tmp_path / "in.png")
    proc = run_cli("upscale", str(src), "-s", "2", "--model", str(bad), text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "n_feats=3000" in proc.stderr


def test_overrides_are_checked_before_building():
    with pytest.raises(CheckpointError, match=r"requested network .*n_feats=100000 \(the tensors have 8\)"):
        fastsr.load(small_state(), n_feats=100_000)


def test_compressed_zip_entries_are_refused(tmp_path):
    import zipfile

    torch.save(small_state(), tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, \
            zipfile.ZipFile(tmp_path / "deflated.pt", "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename) + (b"\0" * 100_000 if "data/4" in info.filename else b""))
    assert isinstance(fastsr.load(tmp_path / "plain.pt"), torch.nn.Module)
    with pytest.raises(CheckpointError, match=r"zip entries expand to .* bytes from a file of .*zip bomb"):
        fastsr.load(tmp_path / "deflated.pt")


# ---------------------------------------------------------------------------------- 2. foreign tensors


def _quantized(t: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)


@pytest.mark.parametrize("kind, make, match", [
    ("meta", lambda t: t.to("meta"), r"'head\.0\.bias' is a meta tensor"),
    ("sparse", lambda t: t.to_sparse(), r"'head\.0\.bias' has layout torch\.sparse_coo; weights must be dense"),
    ("complex", lambda t: t.to(torch.complex64), r"'head\.0\.bias' has dtype torch\.complex64"),
    ("integer", lambda t: t.to(torch.int32), r"'head\.0\.bias' has dtype torch\.int32"),
    ("quantized", _quantized, r"'head\.0\.bias' is a quantized tensor"),
])
def test_foreign_tensors_are_checkpoint_errors(kind, make, match, tmp_path):
    state = small_state()
    state["head.0.bias"] = make(state["head.0.bias"])
    with pytest.raises(CheckpointError, match=match):
        fastsr.load(state)
    if kind in ("sparse", "complex", "quantized"):  # the same through a file and the CLI
        torch.save(state, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=match):
            fastsr.load(tmp_path / "bad.pt")


def test_float8_safetensors_through_the_cli(tmp_path):
    state = {k: v.contiguous() for k, v in small_state().items()}
    state["head.0.weight"] = state["head.0.weight"].to(torch.float8_e4m3fn)
    save_file(state, tmp_path / "f8.safetensors")
    with pytest.raises(CheckpointError, match=r"'head\.0\.weight' has dtype torch\.float8_e4m3fn"):
        fastsr.load(tmp_path / "f8.safetensors")
    proc = run_cli("upscale", str(image(tmp_path / "in.png")), "-s", "2", "--model", str(tmp_path / "f8.safetensors"),
                   text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "float8_e4m3fn" in proc.stderr


def test_tensor_subclasses_are_refused():
    class Tagged(torch.Tensor):
        pass

    state = small_state()
    state["head.0.bias"] = state["head.0.bias"].as_subclass(Tagged)
    with pytest.raises(CheckpointError, match=r"'head\.0\.bias' is a Tagged, not a plain tensor"):
        fastsr.load(state)


# ------------------------------------------------------------------- 3. meta inputs, NaN weights, batches


def test_meta_inputs_and_modules_are_value_errors():
    with pytest.raises(ValueError, match=r"img is a meta tensor \(shape \(3, 24, 20\) without values\)"):
        fastsr.upscale(torch.empty(3, 24, 20, device="meta"), 2, model=create("edsr-baseline-x2", n_feats=8))
    meta_model = create("edsr-baseline-x2", n_resblocks=1, n_feats=8).to("meta")
    with pytest.raises(ValueError, match=r"weight 'sub_mean\.weight' is on the meta device"):
        fastsr.Upscaler(meta_model)
    with pytest.raises(ValueError, match=r"is on the meta device"):
        fastsr.optimize(meta_model)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_weights_are_refused_when_built(value):
    model = create("edsr-baseline-x2", n_resblocks=1, n_feats=8)
    with torch.no_grad():
        model.body[0].body[2].weight[0, 0, 1, 1] = value
    with pytest.raises(ValueError, match=r"weight 'body\.0\.body\.2\.weight' contains NaN or infinite values"):
        fastsr.Upscaler(model)
    with pytest.raises(ValueError, match=r"contains NaN or infinite values"):
        fastsr.optimize(model)
    assert not bool(torch.isfinite(model.body[0].body[2].weight).all())  # the caller's module is untouched


def test_max_pixels_counts_the_whole_batch():
    model = create("edsr-baseline-x2", n_resblocks=1, n_feats=8)
    batch = torch.rand(1, 3, 64, 64).expand(100_000, 3, 64, 64)  # 409.6 M pixels, no memory
    with pytest.raises(ValueError, match=r"a batch of 100000 images is 100000 x 64x64 = 409,600,000 pixels"):
        fastsr.upscale(batch, 2, model=model)
    small = torch.rand(4, 3, 6, 5)
    with pytest.raises(ValueError, match=r"a batch of 4 images is 4 x 5x6 = 120 pixels, over the limit of 100"):
        fastsr.upscale(small, 2, model=model, max_pixels=100)
    assert fastsr.upscale(small, 2, model=model, max_pixels=120).shape == (4, 3, 12, 10)


# --------------------------------------------------------------------------------- 4. names and writing


def test_long_output_names_are_written(tmp_path, checkpoint):
    src = image(tmp_path / "in.png")
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    out = tmp_path / ("y" * (name_max - 4) + ".png")  # the longest legal name
    assert main(["upscale", str(src), "-s", "2", "--model", checkpoint, "-o", str(out)]) == 0
    assert Image.open(out).size == (28, 20)
    assert leftovers(tmp_path) == []
    with pytest.raises(OSError) as info:  # one byte more is the filesystem's error, about the name asked for
        fastsr.save(create("edsr-baseline-x2", n_resblocks=1, n_feats=8), tmp_path / ("z" * (name_max + 1)))
    assert info.value.errno == errno.ENAMETOOLONG and ".tmp" not in str(info.value)


def test_temporary_names_fit_and_cut_multibyte_names_safely(tmp_path):
    target = tmp_path / ("é" * 125 + ".png")  # 254 bytes: the temporary's decoration must cut it mid-character
    f, tmp = files.open_temp_beside(target)
    with f:
        f.write(b"x")
    try:
        assert len(os.fsencode(tmp.name)) <= os.pathconf(tmp_path, "PC_NAME_MAX")
        assert tmp.name.startswith(".") and tmp.name.endswith(".tmp") and tmp.read_bytes() == b"x"
    finally:
        files.forget_temp(tmp)
    assert not tmp.exists()


def test_a_planted_symlink_cannot_redirect_the_write(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    names = iter(["a" * 16, "b" * 16])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    target = tmp_path / "out.png"
    os.symlink(victim, tmp_path / f".out.png.{'a' * 16}.tmp")  # someone guessed the first temporary name
    fastsr.imageio.write_image(Image.new("RGB", (4, 4)), target)
    assert victim.read_text() == "precious"
    assert Image.open(target).size == (4, 4)


def test_unwritable_folder_names_the_output_not_the_temporary(tmp_path, checkpoint, monkeypatch, capsys):
    src = image(tmp_path / "in.png")
    real_open = os.open

    def refuse(path, flags, mode=0o777, **kw):
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(files.os, "open", refuse)
    assert main(["upscale", str(src), "-s", "2", "--model", checkpoint, "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert f"Permission denied: '{tmp_path / 'out.png'}'" in err and ".tmp" not in err


# ---------------------------------------------------------------------------------------- 5. reporting


def test_undecodable_names_under_a_strict_encoder(tmp_path, checkpoint):
    name = os.fsdecode(b"ab\xff.png")
    image(tmp_path / name)
    proc = run_cli("upscale", name, "-s", "2", "--model", checkpoint, cwd=tmp_path,
                   env={"PYTHONIOENCODING": "ascii:strict"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ab\xff_x2.png\n"  # the name's bytes, as on disk
    assert (tmp_path / os.fsdecode(b"ab\xff_x2.png")).is_file()


def test_a_closed_stdout_does_not_fail_the_images(tmp_path, checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        image(folder / f"im{i}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # `fastsr upscale in/ | head -c 0`: the reader is gone before the first line.
    proc = subprocess.Popen([sys.executable, "-m", "fastsr", "upscale", str(folder), "-s", "2", "--model", checkpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "4 of 4 images upscaled" in err and "failed" not in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "in_x2").iterdir()) == [f"im{i}.png" for i in range(4)]


# ---------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig, status, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signals_during_a_write_leave_nothing_behind(sig, status, word, tmp_path, checkpoint, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        image(folder / f"im{i}.png")
    real_save = Image.Image.save
    calls = []

    def save_then_signal(self, fp, *args, **kwargs):
        calls.append(fp)
        real_save(self, fp, *args, **kwargs)
        if len(calls) == 2:  # the second image, half-way: written to its temporary, not yet renamed
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Image.Image, "save", save_then_signal)
    assert main(["upscale", str(folder), "-s", "2", "--model", checkpoint, "-o", str(tmp_path / "out")]) == status
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"fastsr upscale: {word}" and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im0.png"]  # only the finished one
    assert leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was restored, not left raising


def test_remove_live_temps_cleans_what_a_signal_interrupted(tmp_path):
    f, tmp = files.open_temp_beside(tmp_path / "x.png")
    f.close()
    assert tmp.exists() and files.remove_live_temps() == 1 and not tmp.exists()


# --------------------------------------------------------------------------------------- special files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifos_loops_and_devices_are_not_regular_files(tmp_path, checkpoint, capsys):
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    with pytest.raises(ValueError, match=r"pipe\.png: not a regular file: a FIFO \(named pipe\)"):
        fastsr.imageio.read_image(tmp_path / "pipe.png")  # returns at once: never opened for blocking reads
    with pytest.raises(ValueError, match=r"loop\.png: a symlink loop"):
        fastsr.imageio.read_image(tmp_path / "loop.png")
    specs = [str(tmp_path / "pipe.png"), str(tmp_path / "loop.png"), "/dev/zero", str(tmp_path / "gone.png")]
    assert main(["upscale", *specs, "-s", "2", "--model", checkpoint, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pipe.png: not a regular file: a FIFO (named pipe)" in err
    assert "loop.png: a symlink loop" in err
    assert "/dev/zero: not a regular file: a character device" in err
    assert f"input not found: {tmp_path / 'gone.png'}" in err


# ------------------------------------------------------------------------------------------------ fuzz


def test_fuzz_load_under_an_address_space_limit(tmp_path):
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_load.py"), str(tmp_path), "300"], capture_output=True,
                          text=True, timeout=600, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "600 examples held" in proc.stdout
