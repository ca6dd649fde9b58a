"""Random free-form inpainting masks: brush strokes drawn from a seed, as in the inpainting literature.

The paper's seven rectangular mask kinds, which the baselines are trained and evaluated on, are
``brgm_pyro.baselines.masks``; these strokes are the "random free-form masks" of the calibration
benchmark and of ``brgm calibrate --free-form``.

The strokes follow the free-form mask generator of Yu et al., *Free-Form Image Inpainting with
Gated Convolution* (ICCV 2019, DeepFill v2): each stroke starts at a uniform point and runs
through a few vertices, each segment in a random direction with a random length, drawn with a
round brush of a random width (so segments join smoothly). Lengths and widths are fractions of
the image size, so a mask of a 32 px image looks like one of a 256 px image shrunk.

    f = free_form_mask(32, seed=3)        # a Mask operator; f.mask is 1 on observed pixels
"""

from __future__ import annotations

import math

import torch

from brgm_pyro.errors import InputError
from brgm_pyro.forward.masks import Mask

__all__ = ["free_form_mask"]


def _stroke_distance(rows: torch.Tensor, cols: torch.Tensor, start: tuple[float, float], end: tuple[float, float]):
    """Distance of every pixel centre (rows, cols) to the segment from ``start`` to ``end`` (row, col)."""
    (r0, c0), (r1, c1) = start, end
    dr, dc = r1 - r0, c1 - c0
    length2 = dr * dr + dc * dc
    t = ((rows - r0) * dr + (cols - c0) * dc) / length2 if length2 > 0 else torch.zeros_like(rows)
    t = t.clamp(0.0, 1.0)
    return torch.hypot(rows - (r0 + t * dr), cols - (c0 + t * dc))


def free_form_mask(
    size: int,
    seed: int,
    strokes: tuple[int, int] = (2, 4),
    vertices: tuple[int, int] = (2, 5),
    length: tuple[float, float] = (0.12, 0.35),
    width: tuple[float, float] = (0.08, 0.16),
) -> Mask:
    """A seeded free-form mask of a ``size`` x ``size`` image: 0 under the strokes (missing), 1 elsewhere.

    Args:
        size: image side in pixels.
        seed: the same seed gives the same mask.
        strokes, vertices: inclusive ranges of the number of strokes and of vertices per stroke.
        length, width: ranges of a segment's length and of a brush's width, as fractions of ``size``.

    With the defaults a 32 px mask hides 21% of the pixels on average (9-34% for 90% of the seeds).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise InputError(f"free_form_mask needs an integer image size of at least 4 pixels, got {size!r}.")
    gen = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=gen))

    def integer(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (), generator=gen))

    centres = torch.arange(size, dtype=torch.float64) + 0.5
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    missing = torch.zeros(size, size, dtype=torch.bool)
    for _ in range(integer(*strokes)):
        point = (uniform(0, size), uniform(0, size))
        radius = uniform(*width) * size / 2
        angle = uniform(0, 2 * math.pi)
        for _ in range(integer(*vertices)):
            # Each segment turns by up to a right angle, so a stroke bends without folding back.
            angle += uniform(-math.pi / 2, math.pi / 2)
            step = uniform(*length) * size
            end = (
                min(max(point[0] + step * math.sin(angle), 0.0), float(size)),
                min(max(point[1] + step * math.cos(angle), 0.0), float(size)),
            )
            missing |= _stroke_distance(rows, cols, point, end) <= radius
            point = end
    return Mask(~missing)
