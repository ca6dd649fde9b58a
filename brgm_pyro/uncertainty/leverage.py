"""Which pixels the data pin: the leverage of a linear corruption f, and the pixels it leaves unpinned.

For a linear f with matrix F (observed outputs only), the leverage of clean pixel i is the i-th
diagonal entry of the projection onto F's row space, h_i = (F^+ F)_ii, in [0, 1]. It says how
much of that pixel the data determine: under an i.i.d. Gaussian prior on x with variance s^2 and
noise-free y = F x, the posterior variance of x_i is s^2 (1 - h_i). A pixel is **unpinned** when the
data remove less than half its variance, h_i < 1/2 (its linear-Gaussian posterior std above 0.71 of
its prior std), and **pinned** otherwise.

- Inpainting (a ``Mask``): h = the mask, so the unpinned pixels are exactly the hole.
- Super-resolution by a factor k: F has rank n / k^2, h_i is about 1 / k^2 for every pixel
  (1/16 at x4), so every pixel is unpinned: the data fix the block averages, never a pixel.

    unpinned_pixels(f, (1, 1, 32, 32))   # bool (1, C, H, W), True where the data cannot pin the pixel
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.forward import Downsample, Mask

__all__ = ["MAX_DENSE_PIXELS", "PINNED_LEVERAGE", "leverage", "unpinned_pixels"]

PINNED_LEVERAGE = 0.5
"""A pixel with leverage at least this is pinned by the data (module notes)."""
MAX_DENSE_PIXELS = 4096
"""Largest clean image (C H W values) whose leverage is computed from f's dense matrix."""


def _projection_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """diag(A^+ A) for a matrix A (m, n): squared row norms of the right singular vectors kept."""
    _, singular, vh = torch.linalg.svd(matrix, full_matrices=False)
    keep = singular > singular.max() * max(matrix.shape) * torch.finfo(matrix.dtype).eps
    return vh[keep].square().sum(0)


def leverage(f: nn.Module, shape: Sequence[int]) -> torch.Tensor:
    """The leverage h_i of every clean pixel for the linear corruption f: (1, C, H, W) in [0, 1].

    ``shape`` is the clean images' (B, C, H, W) (B is ignored: f treats the images of a batch alike,
    except a ``Mask`` with one mask per image, whose leverage is then (B, C, H, W)).
    """
    batch, channels, height, width = (int(s) for s in shape)
    if isinstance(f, Mask):
        return f.observed(shape).expand(-1, channels, height, width).cpu().double()
    if isinstance(f, Downsample) and f.kernel_name is not None:
        # y = A_H x A_W^T is separable: the row space of A_W (x) A_H projects as P_H (x) P_W.
        probe = torch.zeros((), dtype=torch.float64)
        rows = _projection_diagonal(f._matrix(height, probe))
        cols = _projection_diagonal(f._matrix(width, probe))
        return (rows[:, None] * cols[None, :]).expand(1, channels, height, width)
    size = channels * height * width
    if size > MAX_DENSE_PIXELS:
        raise InputError(
            f"The leverage of {type(f).__name__} on {channels}x{height}x{width} images needs its dense matrix "
            f"({size} > {MAX_DENSE_PIXELS} pixels); use a Mask or a named Downsample kernel at this size."
        )
    device = next(iter(f.buffers()), torch.zeros(())).device
    basis = torch.eye(size, device=device).reshape(size, channels, height, width)
    with torch.no_grad():
        observed = f.observed((1, channels, height, width), device=device)
        columns = (f(basis) * observed).reshape(size, -1).cpu().double()
    return _projection_diagonal(columns.T).reshape(1, channels, height, width)


def unpinned_pixels(f: nn.Module, shape: Sequence[int]) -> torch.Tensor:
    """True where the data cannot pin the clean pixel (leverage below ``PINNED_LEVERAGE``): bool (1 or B, C, H, W)."""
    return leverage(f, shape) < PINNED_LEVERAGE
