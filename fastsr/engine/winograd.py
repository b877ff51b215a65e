"""Winograd F(4x4, 3x3) convolution on torch ops, for the CPU ``torch`` backend in fp32 (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016).

A 3x3 conv (stride 1, padding 1) over NHWC ``x: [N, H, W, C]`` with weights ``[K, C, 3, 3]``: the output is
cut into 4x4 tiles, each computed from a 6x6 input tile as ``Y = A^T [ (G g G^T) * (B^T d B) ] A``. The 36
element-wise products over channels become 36 GEMMs of ``[tiles, C] x [C, K]``: 2.25x fewer multiplications
than the direct conv's 9 per output (4x fewer at large channel counts, where the GEMMs dominate).

Layout, all in fp32:

1. pad the input by 1 (and up to a multiple of 4 rows / columns), gather the overlapping 6x6 tiles into
   ``d: [36, T, C]`` (T = N x ceil(H/4) x ceil(W/4) tiles);
2. input transform as one GEMM: ``V = (B^T (x) B^T) d`` (a 36 x 36 matrix, Kronecker product);
3. 36 batched GEMMs ``M = V U`` with the weights pre-transformed once, ``U = (G (x) G) g: [36, C, K]``;
4. output transform as one GEMM: ``Y = (A^T (x) A^T) M: [16, T, K]``, then one strided copy into
   ``[N, H, W, K]`` fused with the epilogue (bias, then ReLU or the residual add).

The transforms cost memory traffic (the tiles overlap: 36 / 16 = 2.25x the input) that only the GEMM
savings at wide layers repay: the engine times both algorithms per op and shape and keeps the faster
(:class:`WinogradChoice`). F(4, 3) in fp32 has a relative error of about 1e-6-1e-5 against the direct conv.
Its rounding depends on a pixel's place in the 4x4 tile grid, so a tile of an image is not computed
bit-identically to the same pixels of the whole image.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

# F(4, 3) transform matrices (Lavin & Gray, section 4.2), interpolation points 0, +-1, +-2, infinity.
_BT = [[4, 0, -5, 0, 1, 0],
       [0, -4, -4, 1, 1, 0],
       [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0],
       [0, 2, -1, -2, 1, 0],
       [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0],
      [-1 / 6, -1 / 6, -1 / 6],
      [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6],
      [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0],
       [0, 1, -1, 2, -2, 0],
       [0, 1, 1, 4, 4, 0],
       [0, 1, -1, 8, -8, 1]]
TILE, WINDOW = 4, 6  # output tile side, input tile side (TILE + 3 - 1)


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[K, C, 3, 3]`` -> ``U = G g G^T`` as ``[36, C, K]`` fp32 (computed in float64)."""
    if weight.dim() != 4 or weight.shape[-2:] != (3, 3):
        raise ValueError(f"Winograd F(4,3) needs 3x3 weights [K, C, 3, 3], got {tuple(weight.shape)}")
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.double(), g)  # [6, 6, C, K]
    return u.reshape(WINDOW * WINDOW, weight.shape[1], weight.shape[0]).float().contiguous()


def _kron(m: list[list[float]]) -> torch.Tensor:
    t = torch.tensor(m, dtype=torch.float64)
    return torch.kron(t, t).float()


_BT2 = _kron(_BT)  # [36, 36]
_AT2 = _kron(_AT)  # [16, 36]


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor, *, relu: bool = False,
            residual: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``[relu](conv3x3(x) + bias) [+ residual]`` by Winograd F(4, 3).

    ``x``: NCHW logical, channels_last memory (NHWC), fp32; ``u``: :func:`transform_weight`'s ``[36, C, K]``;
    ``residual``: same layout as the output, or None; ``out``: where to write (may be ``residual``, for an
    in-place accumulation), else a new channels_last tensor. Returns the output (NCHW logical).
    """
    n, c, h, w = x.shape
    k = u.shape[2]
    th, tw = -(-h // TILE), -(-w // TILE)
    nhwc = x.permute(0, 2, 3, 1)
    # Zero padding: 1 before, and after up to the last tile's window.
    xp = F.pad(nhwc, (0, 0, 1, TILE * tw + 1 - w, 1, TILE * th + 1 - h))
    s = xp.stride()
    tiles = xp.as_strided((WINDOW, WINDOW, n, th, tw, c), (s[1], s[2], s[0], TILE * s[1], TILE * s[2], s[3]))
    d = tiles.reshape(WINDOW * WINDOW, n * th * tw * c)  # the gather (a copy: windows overlap)
    v = torch.mm(_BT2, d).view(WINDOW * WINDOW, n * th * tw, c)
    m = torch.bmm(v, u)  # [36, T, K]
    y = torch.mm(_AT2, m.view(WINDOW * WINDOW, -1)).view(TILE, TILE, n, th, tw, k)
    y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, TILE * th, TILE * tw, k)[:, :h, :w]  # [N, H, W, K] view
    if out is None:
        out = torch.empty(n, k, h, w, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    o = out.permute(0, 2, 3, 1)
    if residual is not None:
        r = residual.permute(0, 2, 3, 1)
        if out is residual:
            o.add_(y).add_(bias)
        else:
            torch.add(r, y, out=o)
            o.add_(bias)
    else:
        torch.add(y, bias, out=o)
        if relu:
            o.relu_()
    return out


class WinogradChoice:
    """Per-op, per-input-shape choice between the direct conv and Winograd F(4, 3), by timing each once
    on the first input of that shape (after one untimed call each) and keeping the faster for the
    engine's lifetime: the same engine always computes a shape the same way."""

    def __init__(self) -> None:
        self.choices: dict[tuple[int, ...], bool] = {}

    def choose(self, shape: tuple[int, ...], direct, winograd) -> bool:
        if shape not in self.choices:
            times = []
            for fn in (direct, winograd):
                fn()  # warm-up: allocations, oneDNN primitive creation
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            self.choices[shape] = times[1] < times[0]
        return self.choices[shape]
