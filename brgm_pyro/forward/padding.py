"""Border padding as an index map, so that it has an exact adjoint: the convolutions' borders.

Padding an axis of n pixels by (before, after) reads, for each padded position p, the pixel
``index[p]`` of the original axis (or nothing, a zero, where ``index[p]`` is -1):

    "reflect"    mirror without repeating the edge pixel (torch's "reflect", scipy's "mirror")
    "replicate"  repeat the edge pixel
    "circular"   wrap around
    "zeros"      zeros outside the image

As a matrix P (n + before + after, n) has one 1 per row (none for a zero), so P^T adds each padded
position back onto the pixel it was read from: ``unpad`` is the adjoint of ``pad``.
"""

from __future__ import annotations

import torch

__all__ = ["MODES", "pad", "pad_index", "unpad"]

MODES = ("reflect", "replicate", "circular", "zeros")


def pad_index(size: int, before: int, after: int, mode: str) -> torch.Tensor:
    """The source pixel of each padded position along one axis: (size + before + after,) int64, -1 for a zero."""
    position = torch.arange(-before, size + after)
    if mode == "reflect":
        period = 2 * (size - 1) if size > 1 else 1
        folded = position.remainder(period)
        return torch.where(folded < size, folded, period - folded)
    if mode == "replicate":
        return position.clamp(0, size - 1)
    if mode == "circular":
        return position.remainder(size)
    return torch.where((position >= 0) & (position < size), position, torch.full_like(position, -1))


def pad(x: torch.Tensor, index_h: torch.Tensor, index_w: torch.Tensor) -> torch.Tensor:
    """x (..., H, W) read at the index maps of each axis: (..., len(index_h), len(index_w))."""
    for dim, index in ((-2, index_h), (-1, index_w)):
        index = index.to(x.device)
        if bool((index < 0).any()):
            zero = torch.zeros_like(x.narrow(dim, 0, 1))
            x = torch.cat([x, zero], dim)
            index = torch.where(index < 0, x.shape[dim] - 1, index)
        x = x.index_select(dim, index)
    return x


def unpad(z: torch.Tensor, index_h: torch.Tensor, index_w: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The adjoint of :func:`pad`: each padded value added onto the pixel it was read from, (..., H, W)."""
    for dim, index, size in ((-1, index_w, width), (-2, index_h, height)):
        index = index.to(z.device)
        keep = index >= 0
        shape = list(z.shape)
        shape[dim] = size
        out = torch.zeros(shape, dtype=z.dtype, device=z.device)
        z = out.index_add(dim, index[keep], z.index_select(dim, keep.nonzero().flatten()))
    return z
