"""The bundled example image: a synthetic test card drawn by this module (no third-party image content).

It has what makes super-resolution visible: a zone plate (fine concentric rings, aliasing-prone), hard
diagonal and curved edges, thin lines, a colour gradient and a smooth shaded disc. ``fastsr/assets/
example.png`` is exactly ``example_image()`` (a test checks it), so the README's first command needs no
download and no data set.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

EXAMPLE_SIZE = (96, 128)  # (height, width): small, so the CPU demo runs in seconds


def example_image(height: int = EXAMPLE_SIZE[0], width: int = EXAMPLE_SIZE[1]) -> np.ndarray:
    """The test card as a uint8 HxWx3 RGB array (deterministic)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    # Background: a smooth RGB gradient.
    img = np.stack([0.15 + 0.7 * u, 0.2 + 0.6 * v, 0.85 - 0.6 * u * v], axis=-1)

    # Zone plate on the left: cos(k r^2) with frequency rising towards the edge of its disc.
    cy, cx, radius = 0.5 * height, 0.3 * width, 0.42 * height
    r2 = ((y - cy) ** 2 + (x - cx) ** 2) / radius**2
    # Local frequency grows linearly with the radius, reaching 0.4 cycles/pixel (just under Nyquist) at the rim.
    zone = 0.5 + 0.5 * np.cos(np.pi * 0.4 * radius * r2)
    inside = r2 <= 1.0
    img[inside] = zone[inside, None] * np.array([0.95, 0.95, 0.9])

    # Shaded disc (a lit sphere) on the right.
    sy, sx, sr = 0.35 * height, 0.78 * width, 0.2 * height
    d2 = ((y - sy) ** 2 + (x - sx) ** 2) / sr**2
    disc = d2 <= 1.0
    shade = np.sqrt(np.clip(1.0 - d2, 0.0, 1.0)) * (0.6 + 0.4 * (sx - x + sy - y) / (2 * sr))
    img[disc] = np.clip(shade[disc, None], 0, 1) * np.array([0.9, 0.25, 0.2])

    # Hard-edged dark triangle, bottom right.
    tri = (y > 0.62 * height) & (x > 0.6 * width) & ((x - 0.6 * width) < 1.6 * (y - 0.62 * height))
    img[tri] = (0.08, 0.1, 0.12)

    # Thin lines: one-pixel diagonals and a two-pixel vertical bar.
    for k in range(3):
        diag = np.abs((x - 0.55 * width) - 0.5 * (y - 4 * k)) < 0.5
        img[diag & (y < 0.5 * height)] = (1.0, 1.0, 1.0)
    img[:, int(0.57 * width) : int(0.57 * width) + 2] = (0.05, 0.05, 0.05)

    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def example_path() -> Path:
    """Path of the bundled ``example.png`` inside the installed package."""
    return Path(str(resources.files("fastsr") / "assets" / "example.png"))
