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
from brgm_pyro.forward import MAX_DENSE_PIXELS, Operator

__all__ = ["PINNED_LEVERAGE", "leverage", "unpinned_pixels"]

PINNED_LEVERAGE = 0.5
"""A pixel with leverage at least this is pinned by the data (module notes)."""


def leverage(f: nn.Module, shape: Sequence[int]) -> torch.Tensor:
    """The leverage h_i of every clean pixel for the linear corruption f: (1 or B, C, H, W) float64 in [0, 1].

    ``shape`` is the clean images' (B, C, H, W). The operator computes it (``Operator.leverage``):
    exactly for a mask, per axis for a separable f, from its dense matrix for small images. One
    sentence when f cannot tell (not an operator, or too large for its dense matrix).
    """
    value = f.leverage(shape) if isinstance(f, Operator) and f.linear else None
    if value is None:
        channels, height, width = (int(s) for s in shape[1:])
        raise InputError(
            f"The leverage of {type(f).__name__} on {channels}x{height}x{width} images is not known: it is not a "
            f"separable or masking operator and its dense matrix is too large ({channels * height * width} > "
            f"{MAX_DENSE_PIXELS} pixels); use a Mask, a Downsample or a separable Blur at this size."
        )
    return value


def unpinned_pixels(f: nn.Module, shape: Sequence[int]) -> torch.Tensor:
    """True where the data cannot pin the clean pixel (leverage below ``PINNED_LEVERAGE``): bool (1 or B, C, H, W)."""
    return leverage(f, shape) < PINNED_LEVERAGE
