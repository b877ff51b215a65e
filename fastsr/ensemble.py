"""Geometric self-ensemble (the paper's "+" models): the 8 flips / 90-degree rotations of the input are
super-resolved, mapped back and averaged.

Transform k (0..7) of an NCHW tensor is: transpose H and W if ``k & 4``, then flip W if ``k & 1``, then flip
H if ``k & 2``; :func:`undo` applies the inverse. Super-resolution commutes with these transforms up to the
network's weights, so averaging the 8 outputs cancels part of the error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

N_TRANSFORMS = 8


def transform(x: torch.Tensor, k: int) -> torch.Tensor:
    """Dihedral transform ``k`` of the last two dims of ``x``."""
    if k & 4:
        x = x.transpose(-1, -2)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    return x


def undo(y: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`transform` (applied in reverse order)."""
    if k & 2:
        y = y.flip(-2)
    if k & 1:
        y = y.flip(-1)
    if k & 4:
        y = y.transpose(-1, -2)
    return y


def self_ensemble(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Mean over the 8 transforms of ``undo(run(transform(x, k)), k)``, accumulated in fp32."""
    total = None
    for k in range(N_TRANSFORMS):
        y = undo(run(transform(x, k).contiguous()), k).float()
        total = y if total is None else total.add_(y)
    return total / N_TRANSFORMS
