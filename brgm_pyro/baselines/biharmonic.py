"""The "biharmonic" baseline: inpainting by scikit-image's ``inpaint_biharmonic`` (smooth fill of the holes).

The missing pixels are the solution of the biharmonic equation with the observed pixels as boundary
values, computed per image and channel; observed pixels are kept exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.restoration import inpaint_biharmonic
from torch import nn

from brgm_pyro.baselines.common import check_observation, clean_shape
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Mask, Operator

__all__ = ["biharmonic"]


def biharmonic(y: torch.Tensor, f: Operator, G: nn.Module | None = None) -> torch.Tensor:
    """Fill the pixels that the Mask f hides in y (B, C, H, W) by biharmonic inpainting; images (B, C, H, W).

    The result is clipped to [0, 1] (the biharmonic fill can overshoot near sharp edges).
    """
    check_observation(y, f)
    if not isinstance(f, Mask):
        raise InputError(
            f"biharmonic is an inpainting method and needs f to be a Mask, got {type(f).__name__}; "
            "use bicubic for a Downsample."
        )
    shape = clean_shape(y, f, G)
    observed = f.observed(shape, device="cpu", dtype=torch.float32).expand(shape).numpy()
    images = y.detach().to("cpu", torch.float64).numpy()
    filled = images.copy()
    for b, c in np.ndindex(*shape[:2]):
        missing = observed[b, c] == 0
        if missing.all():
            raise InputError(
                f"The mask hides every pixel of image {b} (channel {c}), so there is nothing to inpaint from; "
                "observe at least one pixel."
            )
        if missing.any():
            filled[b, c] = inpaint_biharmonic(images[b, c], missing)
    return torch.from_numpy(filled.clip(0, 1)).to(device=y.device, dtype=y.dtype)
