"""Training smoke tests on tiny synthetic data: steps run, checkpoints load, resume equals a straight run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import fastsr
from fastsr.example import example_image
from fastsr.models import MDSR
from fastsr.resize import imresize, modcrop
from fastsr.train import PatchSampler, TrainOptions, learning_rate, train

TINY = dict(n_resblocks=1, n_feats=8)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 52), (48, 48), (36, 60)]):
        Image.fromarray(np.roll(example_image(h, w), 5 * i, axis=1)).save(folder / f"img{i}.png")
    Image.fromarray(example_image(6, 6)).save(folder / "too_small.png")
    return folder


def options(images, out, **kw):
    base = dict(model="mdsr-baseline", model_overrides=TINY, data=(str(images),), out=str(out), steps=2,
                batch_size=2, patch_size=8, save_every=1, threads=1)
    return TrainOptions(**{**base, **kw})


def test_two_steps_write_a_loadable_checkpoint(images, tmp_path):
    summary = train(options(images, tmp_path / "run"))
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
    model = fastsr.load(tmp_path / "run" / "checkpoint.pt")
    assert isinstance(model, MDSR) and model.config.n_feats == 8
    weights = fastsr.load(tmp_path / "run" / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights.state_dict()[k])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["lr"] == 1e-4 for r in log)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["data"] == {"train_data": ["images"], "train_images": 4}


def test_resume_equals_uninterrupted_run(images, tmp_path):
    train(options(images, tmp_path / "straight", steps=4))
    train(options(images, tmp_path / "split", steps=2, save_every=2))
    # A record past the checkpoint (as after a crash between saves) is dropped on resume.
    with open(tmp_path / "split" / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": 0.0}) + "\n")
    train(options(images, tmp_path / "split", steps=4, resume=True))
    a = fastsr.load(tmp_path / "straight" / "checkpoint.pt").state_dict()
    b = fastsr.load(tmp_path / "split" / "checkpoint.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="exists: pass resume=True"):
        train(options(images, tmp_path / "split", steps=5))


def test_bf16_autocast_on_cpu_keeps_fp32_weights_and_can_switch_on_resume(images, tmp_path):
    fp32 = train(options(images, tmp_path / "fp32", steps=1))
    bf16 = train(options(images, tmp_path / "bf16", steps=1, amp="bf16"))
    # Same weights and batch: the first loss differs only by the bf16 forward (8-bit mantissa: ~0.4% per op).
    assert bf16["loss"] != fp32["loss"] and bf16["loss"] == pytest.approx(fp32["loss"], rel=0.05)
    train(options(images, tmp_path / "fp32", steps=3, amp="bf16", resume=True))  # fp32 run continued in bf16
    ckpt = torch.load(tmp_path / "fp32" / "checkpoint.pt", weights_only=True)  # as stored, not re-cast by load
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values())
    adam = [t for state in ckpt["optimizer"]["state"].values() for k, t in state.items() if k != "step"]
    assert adam and all(t.dtype == torch.float32 for t in adam)
    log = [json.loads(line) for line in (tmp_path / "fp32" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)


def test_only_the_drawn_scale_branch_is_updated(images, tmp_path):
    train(options(images, tmp_path / "run", steps=1, seed=0))
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    trained = fastsr.load(tmp_path / "run" / "checkpoint.pt")
    # Re-create the initial weights: train() seeds torch with options.seed before building the model.
    torch.manual_seed(0)
    init = fastsr.models.create("mdsr-baseline", **TINY).state_dict()
    k = trained.config.scales.index(record["scale"])
    for key, value in trained.state_dict().items():
        changed = not torch.equal(value, init[key])
        own_branch = key.startswith((f"pre_process.{k}.", f"upsample.{k}."))
        other_branch = key.startswith(("pre_process.", "upsample.")) and not own_branch
        if other_branch or key.startswith(("sub_mean", "add_mean")):
            assert not changed, key
        elif key.endswith("weight"):
            assert changed, key


def test_init_from_copies_matching_weights(images, tmp_path):
    x2 = fastsr.models.create("edsr-baseline-x2", **TINY)
    path = fastsr.save(x2, tmp_path / "x2.pt")
    opts = options(images, tmp_path / "x3", model="edsr-baseline-x3", init_from=str(path), steps=1, save_every=5)
    # lr tiny: after one step the copied weights are still within 1e-3 of the x2 ones.
    train(TrainOptions(**{**opts.__dict__, "lr": 1e-9}))
    x3 = fastsr.load(tmp_path / "x3" / "checkpoint.pt").state_dict()
    torch.testing.assert_close(x3["body.0.body.0.weight"], x2.state_dict()["body.0.body.0.weight"], atol=1e-6, rtol=0)
    assert x3["tail.0.0.weight"].shape == (72, 8, 3, 3)


def test_patch_sampler_pairs_are_aligned():
    hr = example_image(64, 80)
    sampler = PatchSampler([hr], scales=(2, 4), patch_size=8)
    lr, hr_p = sampler.batch(np.random.default_rng(0), 4, 4)
    assert lr.shape == (4, 3, 8, 8) and hr_p.shape == (4, 3, 32, 32)
    # Each LR patch is the MATLAB bicubic downscale of its HR patch, up to the border handling of the crop:
    # compare interiors.
    for i in range(4):
        lr_np = lr[i].permute(1, 2, 0).numpy().astype(np.uint8)
        down = imresize(modcrop(hr_p[i].permute(1, 2, 0).numpy().astype(np.uint8), 4), 1 / 4)
        assert np.abs(lr_np[2:-2, 2:-2].astype(int) - down[2:-2, 2:-2]).max() <= 1


def test_cosine_schedule_warms_up_decays_and_is_logged(images, tmp_path):
    opts = options(images, tmp_path / "cos", steps=6, lr=1e-3, lr_schedule="cosine", lr_min=1e-5, warmup_steps=2)
    rates = [learning_rate(opts, s) for s in range(7)]
    # Linear warm-up from 0 (never exactly 0, which would waste a step), then a cosine from lr to lr_min.
    assert rates[0] == pytest.approx(1e-3 / 3) and rates[1] == pytest.approx(2e-3 / 3)
    assert rates[2] == pytest.approx(1e-3) and rates[4] == pytest.approx((1e-3 + 1e-5) / 2)
    assert rates[6] == pytest.approx(1e-5) and all(a > b for a, b in zip(rates[2:], rates[3:]))
    train(opts)
    log = [json.loads(line) for line in (tmp_path / "cos" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log] == pytest.approx(rates[:6])
    # The paper's schedule is unchanged: halved every lr_halve_every steps.
    step = options(images, tmp_path / "s", lr_halve_every=3)
    assert [learning_rate(step, s) for s in (0, 2, 3, 6)] == pytest.approx([1e-4, 1e-4, 5e-5, 2.5e-5])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(data=()), "at least one folder"),
        (dict(lr_schedule="linear"), "lr_schedule must be 'step' or 'cosine'"),
        (dict(lr_schedule="cosine", lr_min=1.0), r"lr_min must be a finite number in \[0, lr"),
        (dict(lr_schedule="cosine", warmup_steps=1000), r"warmup_steps must be an int in \[0, steps=1000\)"),
        (dict(warmup_steps=10), "belong to lr_schedule='cosine'"),
        (dict(steps=0), "steps must be a positive int"),
        (dict(lr=float("inf")), "lr must be a finite number"),
        (dict(amp="int8"), "amp must be None"),
        (dict(model="edsr-x5"), "unknown preset"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainOptions(**{"data": ("x",), **kwargs})


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="training data folder not found"):
        train(TrainOptions(data=(str(tmp_path / "nope"),), out=str(tmp_path / "o"), steps=1))
