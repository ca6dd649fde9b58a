"""The inpainting masks: the authors' seven kinds (paper Sec. 3.4), exact for evaluation, jittered for training.

Each kind is a set of missing rectangles given in fractions of the image side S, so the kinds are
defined at any size; at S = 32:

==================  ==========================================  ====================
kind                missing pixels (rows, columns)               missing fraction
==================  ==========================================  ====================
right-half          all rows, columns 16-31                     1/2
left-half           all rows, columns 0-15                      1/2
two-boxes           8x8 boxes at rows/columns 6-13 and 18-25    1/8
vertical-bar        all rows, columns 13-18                     6/32
top-right-quadrant  rows 0-15, columns 16-31                    1/4
centre-box          rows 8-23, columns 8-23                     1/4
bottom-half         rows 16-31, all columns                     1/2
==================  ==========================================  ====================

Masks are float tensors with 1 = observed, 0 = missing, as ``brgm_pyro.forward.Mask`` takes them.
Random free-form (brush-stroke) masks are another kind of mask: ``brgm_pyro.forward.free_form``.
The paper applies its masks in turn over the test images; :func:`cyclic_masks` does the same.
"""

from __future__ import annotations

import torch

from brgm_pyro.errors import InputError

__all__ = ["MASK_KINDS", "cyclic_masks", "mask", "random_masks"]

# kind -> missing rectangles (top, left, height, width) in units of S / 32
_RECTANGLES = {
    "right-half": ((0, 16, 32, 16),),
    "left-half": ((0, 0, 32, 16),),
    "two-boxes": ((6, 6, 8, 8), (18, 18, 8, 8)),
    "vertical-bar": ((0, 13, 32, 6),),
    "top-right-quadrant": ((0, 16, 16, 16),),
    "centre-box": ((8, 8, 16, 16),),
    "bottom-half": ((16, 0, 16, 32),),
}
MASK_KINDS = tuple(_RECTANGLES)


def _check(kind: str, size: int) -> None:
    if kind not in _RECTANGLES:
        raise InputError(f"Unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}.")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise InputError(f"Mask size must be an integer of at least 8 pixels, got {size!r}.")


def _edges(kind: str, size: int) -> torch.Tensor:
    """The rectangles of ``kind`` as integer edges (top, left, bottom, right), shape (R, 4)."""
    rectangles = torch.tensor(_RECTANGLES[kind], dtype=torch.float64) * size / 32
    top, left, height, width = rectangles.unbind(-1)
    return torch.stack([top, left, top + height, left + width], dim=-1).round().long()


def _paint(edges: torch.Tensor, size: int) -> torch.Tensor:
    """Masks (N, 1, S, S) from edges (N, R, 4): 0 inside any rectangle, 1 elsewhere."""
    grid = torch.arange(size)
    top, left, bottom, right = (edges[..., i, None] for i in range(4))
    rows = (grid >= top) & (grid < bottom)  # (N, R, S)
    columns = (grid >= left) & (grid < right)
    missing = (rows[..., :, None] & columns[..., None, :]).any(dim=1)
    return (~missing).to(torch.float32)[:, None]


def mask(kind: str, size: int = 32) -> torch.Tensor:
    """The mask of ``kind`` (one of :data:`MASK_KINDS`) for images of ``size`` x ``size``: (S, S), 1 = observed."""
    _check(kind, size)
    return _paint(_edges(kind, size)[None], size)[0, 0]


def cyclic_masks(count: int, size: int = 32, kinds: tuple[str, ...] = MASK_KINDS) -> torch.Tensor:
    """Masks (count, 1, S, S) of ``kinds`` applied in turn (image i gets kinds[i % len(kinds)])."""
    for kind in kinds:
        _check(kind, size)
    return torch.stack([mask(kinds[i % len(kinds)], size) for i in range(count)])[:, None]


def random_masks(
    count: int, generator: torch.Generator, size: int = 32, jitter: float = 0.125, kinds: tuple[str, ...] = MASK_KINDS
) -> torch.Tensor:
    """Training masks (count, 1, S, S): a kind drawn uniformly per mask, each rectangle edge moved.

    Every edge of every rectangle moves by an integer drawn uniformly from [-j, j], j = round(jitter * S)
    (4 pixels at 32), then is clipped to the image, so positions and sizes vary around the kind's
    mask and a network cannot learn the seven masks by heart. A rectangle never vanishes: each side
    keeps at least one pixel.
    """
    for kind in kinds:
        _check(kind, size)
    reach = round(jitter * size)
    drawn = torch.randint(len(kinds), (count,), generator=generator)
    masks = torch.empty(count, 1, size, size)
    for index, kind in enumerate(kinds):
        rows = (drawn == index).nonzero().flatten()
        base = _edges(kind, size).expand(len(rows), -1, -1)
        moves = torch.randint(-reach, reach + 1, base.shape, generator=generator)
        edges = (base + moves).clamp(0, size)
        # Keep every rectangle at least one pixel high and wide.
        edges[..., 2:] = torch.maximum(edges[..., 2:], edges[..., :2] + 1).clamp(max=size)
        edges[..., :2] = torch.minimum(edges[..., :2], edges[..., 2:] - 1)
        masks[rows] = _paint(edges, size)
    return masks
