"""Training with the paper's recipe (Lim et al. 2017, section 4.2).

Random ``patch_size`` x ``patch_size`` LR patches with their HR patches, the LR images made once per scale by
the MATLAB-compatible bicubic resize (:mod:`fastsr.resize`) of ``modcrop(HR, s)``; random flips and
90-degree rotations; L1 loss; Adam (0.9, 0.999, eps 1e-8); learning rate 1e-4 halved every
``lr_halve_every`` steps (the paper's schedule), or ``lr_schedule="cosine"``: a cosine from ``lr`` at step
``warmup_steps`` down to ``lr_min`` at ``steps``, after a linear warm-up from 0 (for a continuation of a
trained model, where a fresh Adam at full rate would first knock the weights off their minimum); batch 16.
MDSR draws one scale per batch, so only that scale's pre-processing and upsampler (plus the shared body)
get gradients and updates. EDSR x3 / x4 can start from a trained x2 (``init_from``): every weight whose key
and shape match is copied.

A run lives in one folder: ``checkpoint.pt`` (model, optimizer, step, options; rewritten atomically every
``save_every`` steps and at the end), ``model.safetensors`` (the weights as a fastsr checkpoint) and
``log.jsonl`` (loss and validation PSNR). ``resume=True`` continues from ``checkpoint.pt``; the patch
sampler is reseeded from (seed, step), so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ._files import atomic_write
from .checkpoint import TRAIN_FORMAT_TAG as TRAIN_FORMAT
from .checkpoint import read_state_dict, save
from .evaluate import score, super_resolve
from .imageio import IMAGE_EXTENSIONS, read_pixels
from .models import MDSR, build, config_from_dict, config_from_name
from .resize import imresize, modcrop

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainOptions:
    model: str = "mdsr-baseline"  # a preset name
    data: tuple[str, ...] = ()  # folders of HR training images (searched recursively)
    out: str = "runs/train"
    steps: int = 1000  # total steps (a resumed run continues up to this)
    batch_size: int = 16
    patch_size: int = 48  # LR patch side
    lr: float = 1e-4
    lr_halve_every: int = 200_000
    lr_schedule: str = "step"  # "step": halve every lr_halve_every; "cosine": warm-up, then cosine to lr_min
    lr_min: float = 0.0  # the cosine schedule's final rate
    warmup_steps: int = 0  # linear warm-up from 0 (cosine schedule only)
    seed: int = 0
    save_every: int = 100
    val_dir: str | None = None  # a benchmark set folder with HR/ (and LR_bicubic/), e.g. Set5
    val_every: int = 500
    device: str = "cpu"
    amp: str | None = None  # autocast: None, "bf16" (CUDA or a CPU with bf16 instructions) or "fp16"
    init_from: str | None = None  # checkpoint whose non-upsampler weights start the run
    resume: bool = False
    threads: int | None = None  # torch CPU threads (None: torch's default)
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)):
            self.data = (str(self.data),)
        self.data = tuple(str(d) for d in self.data)
        if not self.data:
            raise ValueError("data: give at least one folder of training images")
        for name in ("steps", "batch_size", "patch_size", "lr_halve_every", "save_every", "val_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {self.lr_schedule!r}")
        if not (isinstance(self.lr_min, (int, float)) and math.isfinite(self.lr_min) and 0 <= self.lr_min <= self.lr):
            raise ValueError(f"lr_min must be a finite number in [0, lr={self.lr}], got {self.lr_min!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or not (
                0 <= self.warmup_steps < self.steps):
            raise ValueError(f"warmup_steps must be an int in [0, steps={self.steps}), got {self.warmup_steps!r}")
        if self.lr_schedule == "step" and (self.warmup_steps or self.lr_min):
            raise ValueError("warmup_steps and lr_min belong to lr_schedule='cosine'")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        config_from_name(self.model, **self.model_overrides)  # validates the preset and overrides


def learning_rate(options: TrainOptions, step: int) -> float:
    """The rate for the step after ``step`` steps have run (a function of the step alone, so resumes agree)."""
    if options.lr_schedule == "step":
        return options.lr * 0.5 ** (step // options.lr_halve_every)
    if step < options.warmup_steps:
        return options.lr * (step + 1) / (options.warmup_steps + 1)
    progress = (step - options.warmup_steps) / max(1, options.steps - options.warmup_steps)
    return options.lr_min + (options.lr - options.lr_min) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# ------------------------------------------------------------------------------------------------ data


def find_images(folders: Sequence[str | os.PathLike]) -> list[Path]:
    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"training data folder not found: {folder}")
        paths += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {', '.join(map(str, folders))}")
    return paths


class PatchSampler:
    """Random aligned (LR, HR) patch batches with the 8 flips / 90-degree rotations, in memory.

    The LR images are made once per scale with the MATLAB bicubic resize of ``modcrop(HR, s)``; images too
    small for a ``patch_size`` LR patch at a scale are not used at that scale.
    """

    def __init__(self, hr_images: Sequence[np.ndarray], scales: Sequence[int], patch_size: int) -> None:
        self.patch_size = patch_size
        self.scales = tuple(scales)
        self.pairs: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for s in self.scales:
            pairs = []
            for hr in hr_images:
                hr = modcrop(hr, s)
                if min(hr.shape[:2]) // s >= patch_size:
                    pairs.append((imresize(hr, 1 / s), hr))
            if not pairs:
                raise ValueError(f"no training image is large enough for a {patch_size}px LR patch at x{s}")
            self.pairs[s] = pairs

    def batch(self, rng: np.random.Generator, batch_size: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        p, s = self.patch_size, scale
        lrs, hrs = [], []
        pairs = self.pairs[s]
        for _ in range(batch_size):
            lr, hr = pairs[rng.integers(len(pairs))]
            y = int(rng.integers(lr.shape[0] - p + 1))
            x = int(rng.integers(lr.shape[1] - p + 1))
            lr_p = lr[y : y + p, x : x + p]
            hr_p = hr[s * y : s * (y + p), s * x : s * (x + p)]
            hflip, vflip, transpose = rng.integers(2, size=3)
            if hflip:
                lr_p, hr_p = lr_p[:, ::-1], hr_p[:, ::-1]
            if vflip:
                lr_p, hr_p = lr_p[::-1], hr_p[::-1]
            if transpose:
                lr_p, hr_p = lr_p.transpose(1, 0, 2), hr_p.transpose(1, 0, 2)
            lrs.append(lr_p)
            hrs.append(hr_p)

        def to_tensor(patches: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.stack(patches))).permute(0, 3, 1, 2).float()

        return to_tensor(lrs), to_tensor(hrs)


# ---------------------------------------------------------------------------------------------- validation


def validate(model: torch.nn.Module, set_dir: str | os.PathLike, scales: Sequence[int]) -> dict[int, float]:
    """Mean Y-PSNR (shave = scale) per scale on a benchmark set."""
    was_training = model.training
    model.eval()
    try:
        return {s: score(set_dir, s, lambda lr, s: super_resolve(model, lr, s)).psnr for s in scales}
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------- training


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def _init_from(model: torch.nn.Module, path: str) -> None:
    """Copy every weight of ``path`` whose key and shape match (x2 -> x3 / x4: all but the new upsampler)."""
    state, _ = read_state_dict(path)
    own = model.state_dict()
    copied = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not copied:
        raise ValueError(f"init_from {path}: no weight matches the model")
    own.update(copied)
    model.load_state_dict(own)
    skipped = sorted(set(own) - set(copied))
    log.info("initialised %d of %d tensors from %s; new: %s", len(copied), len(own), path, skipped or "none")


def train(options: TrainOptions) -> dict[str, Any]:
    """Run (or resume) training; returns a summary (steps, last loss, validation PSNR, paths)."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    config = config_from_name(options.model, **options.model_overrides)
    torch.manual_seed(options.seed)  # the initial weights
    # channels_last: oneDNN (CPU) and cuDNN (tensor cores) both run NHWC convs faster (~1.2x on this CPU).
    model = build(config).to(device, memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]  # the MeanShift convs are frozen
    optimizer = torch.optim.Adam(trainable, lr=options.lr, betas=(0.9, 0.999), eps=1e-8)
    step = 0
    resumed_scaler = None
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file() and not options.resume:
        raise ValueError(f"{ckpt_path} exists: pass resume=True (--resume) to continue it, or another out folder")
    if options.resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt.get("format") != TRAIN_FORMAT or config_from_dict(ckpt["config"]) != config:
            raise ValueError(f"{ckpt_path} is not a checkpoint of this run's model ({config})")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        resumed_scaler = ckpt.get("scaler")
        log.info("resumed %s at step %d", ckpt_path, step)
    elif options.init_from:
        _init_from(model, options.init_from)

    image_paths = find_images(options.data)
    hr_images = [read_pixels(p, gray=False) for p in image_paths]
    # What this session trains on, kept in the checkpoint (bundle_run records it with the weights).
    data_record = {"train_data": [Path(d).name for d in options.data], "train_images": len(image_paths)}
    sampler = PatchSampler(hr_images, config.scales, options.patch_size)
    log.info("training %s on %d images, scales %s", options.model, len(hr_images), config.scales)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(options.amp or "")
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    if step and resumed_scaler:
        scaler.load_state_dict(resumed_scaler)
    log_path = out / "log.jsonl"
    if log_path.is_file():  # drop records written after the checkpoint being resumed (or all, on a fresh run)
        kept = [line for line in log_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    log_file = open(log_path, "a", encoding="utf-8")

    def save_state() -> None:
        _atomic_torch_save({"format": TRAIN_FORMAT, "config": config.to_dict(), "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
                            "options": json.dumps(dataclasses.asdict(options)), "data": data_record}, ckpt_path)
        save(model, out / "model.safetensors")

    model.train()
    last_loss = float("nan")
    val: dict[int, float] = {}
    bar = tqdm(total=options.steps, initial=step, unit="step", dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 60.0, disable=None)
    t0 = time.perf_counter()
    try:
        while step < options.steps:
            rng = np.random.default_rng([options.seed, step])
            scale = int(rng.choice(config.scales))
            lr_batch, hr_batch = sampler.batch(rng, options.batch_size, scale)
            lr_batch = lr_batch.to(device, memory_format=torch.channels_last)
            hr_batch = hr_batch.to(device, memory_format=torch.channels_last)
            if config.rgb_range != 255:
                lr_batch, hr_batch = lr_batch * (config.rgb_range / 255), hr_batch * (config.rgb_range / 255)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(options, step)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                sr = model(lr_batch, scale) if isinstance(model, MDSR) else model(lr_batch)
                loss = F.l1_loss(sr.float(), hr_batch)
            optimizer.zero_grad(set_to_none=True)  # untouched branches keep grad None: Adam skips them
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss):
                raise FloatingPointError(f"loss became {last_loss} at step {step}; not saving")
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", scale=scale, refresh=False)
            record: dict[str, Any] = {"step": step, "loss": last_loss, "scale": scale,
                                      "lr": optimizer.param_groups[0]["lr"], "time": time.time()}
            if options.val_dir and (step % options.val_every == 0 or step == options.steps):
                val = validate(model, options.val_dir, config.scales)
                record["val_psnr"] = {str(k): v for k, v in val.items()}
                bar.write(f"step {step}: validation PSNR " + ", ".join(f"x{k} {v:.2f} dB" for k, v in val.items()))
            log_file.write(json.dumps(record) + "\n")
            if step % options.save_every == 0 or step == options.steps:
                log_file.flush()
                save_state()
    finally:
        bar.close()
        log_file.close()
    elapsed = time.perf_counter() - t0
    return {"step": step, "loss": last_loss, "val_psnr": val, "seconds": elapsed,
            "checkpoint": str(ckpt_path), "weights": str(out / "model.safetensors")}
