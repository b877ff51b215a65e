"""``fastsr.inputs``: input expansion, output naming and the overwrite / collision policy (no model, no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fastsr.inputs import OutputPlan, OutputRefused, Source, expand_inputs, image_output_for, output_for


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("b.png", "a.jpg", ".hidden.png", "notes.txt"):
        (d / name).write_bytes(b"x")
    return d


def test_a_folder_gives_its_images_sorted_and_a_glob_its_matches(folder):
    sources, errors = expand_inputs([folder, str(folder / "*.txt")])
    assert errors == []
    assert sources == [Source(folder / "a.jpg", folder), Source(folder / "b.png", folder),
                       Source(folder / "notes.txt")]  # a glob takes any file; a folder only its images


def test_what_yields_nothing_is_one_error_each(tmp_path, folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    sources, errors = expand_inputs([tmp_path / "missing.png", str(tmp_path / "nothing_*.png"), empty, folder])
    assert len(sources) == 2
    assert errors == [f"input not found: {tmp_path / 'missing.png'}", f"no files match {tmp_path / 'nothing_*.png'}",
                      f"no images (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp, .gif) in folder {empty}"]


def test_a_uri_is_listed_only_when_asked(folder):
    pytest.importorskip("pyarrow")
    assert expand_inputs([folder.as_uri()]) == ([], [f"input not found: {folder.as_uri()}"])  # a local path
    sources, errors = expand_inputs([folder.as_uri()], uris=True)
    assert errors == []
    assert [(s.name, str(s.path)) for s in sources] == [(folder.as_uri() + f"/{n}", str(folder / n))
                                                        for n in ("a.jpg", "b.png")]


def test_naming(tmp_path):
    src = Source(tmp_path / "clip.mp4")
    assert output_for(src, scale=2, suffix=".mp4") == tmp_path / "clip_x2.mp4"
    assert output_for(src, scale=2, suffix=".mp4", output="out") == Path("out/clip.mp4")
    assert output_for(src, scale=2, suffix=".mp4", output="out.mkv", output_is_file=True) == Path("out.mkv")
    assert output_for(src, scale=3, suffix=".png", default_folder="here") == Path("here/clip_x3.png")
    in_folder = Source(tmp_path / "photos" / "a.jpeg", tmp_path / "photos")
    assert output_for(in_folder, scale=4, suffix=".jpeg") == tmp_path / "photos_x4" / "a.jpeg"


def test_image_naming_keeps_the_format_or_writes_png(tmp_path):
    rgb, rgba = Image.new("RGB", (2, 2)), Image.new("RGBA", (2, 2))
    rgb.format = rgba.format = "JPEG"  # as read from a .jpeg: kept, with its spelling
    src = Source(tmp_path / "a.jpeg")
    assert image_output_for(src, rgb, scale=2) == (tmp_path / "a_x2.jpeg", "JPEG")
    assert image_output_for(src, rgba, scale=2) == (tmp_path / "a_x2.png", "PNG")  # JPEG has no alpha
    with pytest.raises(ValueError, match=r"cannot write a RGBA image as JPEG \(out.jpg\); use .png"):
        image_output_for(src, rgba, scale=2, output="out.jpg", output_is_file=True)


def refusal(call, *args, **kwargs) -> str:
    with pytest.raises(OutputRefused) as e:
        call(*args, **kwargs)
    return str(e.value)


def test_an_input_is_never_an_output(tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(a)
    plan = OutputPlan([a], overwrite=True)
    assert refusal(plan.claim, a) == f"refusing to overwrite the input {a}"
    assert refusal(plan.claim, tmp_path / "link.png") == f"refusing to overwrite the input {tmp_path / 'link.png'}"


def test_an_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "a_x2.png"
    out.write_bytes(b"x")
    assert refusal(OutputPlan().claim, out) == f"{out} exists; pass --overwrite to replace it"
    OutputPlan(overwrite=True).claim(out)
    OutputPlan(resume=True).check(out)  # resuming: a complete output, for the caller to skip


def test_two_inputs_never_write_one_output(tmp_path):
    out = tmp_path / "a.png"
    plan = OutputPlan()
    plan.claim(out)
    assert refusal(plan.claim, out) == f"another input is already written to {out}"
    # A caller that sees one input at a time (a Ray worker) names the outputs of the earlier ones.
    assert refusal(OutputPlan().check, out, earlier=[tmp_path / "c.png", out]) == \
        f"another input is already written to {out}"
    OutputPlan().check(out, earlier=[tmp_path / "c.png"])
