"""Videos through the CLI (recognised by their container, mixed with images in folders) and on Ray."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")

from test_video import _model, frames, make_clip, packets  # noqa: E402

import fastsr  # noqa: E402
from fastsr.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(fastsr.save(_model(2), tmp_path_factory.mktemp("m") / "tiny.safetensors"))


def test_a_folder_of_images_and_videos(tmp_path, tiny, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "a.mp4", n=6)
    img = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(img).save(folder / "b.png")
    assert main(["upscale", str(folder), "-s", "2", "--model", tiny, "--codec", "ffv1"]) == 0
    out = capsys.readouterr()
    # ffv1 does not go into .mp4: the video's result is Matroska; the image keeps its format.
    assert sorted(p.name for p in (tmp_path / "in_x2").iterdir()) == ["a.mkv", "b.png"]
    assert "2 of 2 files upscaled" in out.err and "note:" in out.err
    up = fastsr.Upscaler(tiny, device="cpu")
    got = frames(tmp_path / "in_x2" / "a.mkv")
    want = [up(rgb, 2) for _, rgb in frames(folder / "a.mp4")]
    assert len(got) == 6 and all(np.array_equal(g[1], w) for g, w in zip(got, want))
    # The sound is stream-copied (Matroska keeps the payloads; its timestamps are in milliseconds).
    assert [p[0] for p in packets(tmp_path / "in_x2" / "a.mkv", "audio")] == [p[0] for p in packets(folder / "a.mp4", "audio")]


def test_video_options_and_errors(tmp_path, tiny, capsys):
    clip = make_clip(tmp_path / "c.mp4", n=4)
    png = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    assert main(["upscale", str(png), "-s", "2", "--model", tiny, "--codec", "ffv1"]) == 2
    assert "--codec and --crf apply to videos; no INPUT is one" in capsys.readouterr().err
    assert main(["upscale", str(clip), "-s", "2", "--model", tiny, "--codec", "h264"]) == 2
    assert "unknown --codec 'h264'; choose one of libx264, libx265, libvpx-vp9, ffv1" in capsys.readouterr().err
    assert main(["upscale", str(clip), "-s", "2", "--model", tiny, "--ensemble"]) == 2
    assert "--ensemble and --halo are for images" in capsys.readouterr().err
    assert main(["upscale", str(clip), str(png), "-s", "2", "--model", tiny, "--ray", "-o", str(tmp_path / "o")]) == 2
    assert "--ray takes either videos" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4", "p.png"]  # nothing written


def test_ray_segments_equal_one_process(tmp_path, tiny):
    pytest.importorskip("ray")
    src = make_clip(tmp_path / "in.mkv", n=12, audio="libopus")
    up = fastsr.Upscaler(tiny, device="cpu")
    one = fastsr.upscale_video(src, tmp_path / "one.mkv", 2, model=up, codec="ffv1", segment_frames=4)
    ray = fastsr.upscale_video(src, tmp_path / "ray.mkv", 2, model=up, codec="ffv1", segment_frames=4,
                               ray_address="", num_workers=2)
    assert ray.segments == one.segments == 3 and ray.frames == one.frames == 12
    a, b = frames(tmp_path / "one.mkv"), frames(tmp_path / "ray.mkv")
    assert len(a) == len(b) == 12
    assert all(x[0] == y[0] and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert packets(tmp_path / "ray.mkv", "audio") == packets(src, "audio")
