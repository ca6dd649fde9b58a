"""The "bicubic" baseline: super-resolution by Pillow's bicubic upsampling of y, the field's reference.

Pillow's BICUBIC is Keys' cubic with a = -0.5, the kernel of MATLAB's imresize that the
super-resolution literature quotes as "bicubic". It is applied as the exact linear map Pillow
computes (:func:`bicubic_upsample`), so it runs on batches, on any device, and is differentiable.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from torch import nn

from brgm_pyro.baselines.common import check_observation, clean_shape, operator_chain
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Blur, Downsample, Operator

__all__ = ["bicubic", "bicubic_upsample"]


@functools.lru_cache(maxsize=16)
def _pil_bicubic_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """The (size_out, size_in) matrix of Pillow's 1-D bicubic resize.

    Pillow resizes separably, so resizing a 2-D image equals A_H y A_W^T; the columns of A are the
    resized unit impulses (float mode "F", so no 8-bit rounding).
    """
    impulses = np.eye(size_in, dtype=np.float32)
    columns = [
        np.asarray(Image.fromarray(impulse[None, :]).resize((size_out, 1), Image.Resampling.BICUBIC))[0]
        for impulse in impulses
    ]
    return torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))


def bicubic_upsample(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pillow's bicubic resize of images y (B, C, h, w) to ``size`` (H, W), unclamped, differentiable.

    Equal, to float rounding, to ``PIL.Image.resize(size, BICUBIC)`` of each channel in mode "F".
    """
    a_h = _pil_bicubic_matrix(y.shape[-2], size[0]).to(device=y.device, dtype=y.dtype)
    a_w = _pil_bicubic_matrix(y.shape[-1], size[1]).to(device=y.device, dtype=y.dtype)
    return a_h @ y @ a_w.transpose(0, 1)


def bicubic(y: torch.Tensor, f: Operator, G: nn.Module | None = None) -> torch.Tensor:
    """Bicubic upsampling of y (B, C, h, w) to the clean size (G's resolution, or h and w times f's factor).

    f must be a super-resolution operator: a Downsample, optionally after a Blur (Compose); the result
    is clamped to [0, 1]. Returns images (B, C, H, W).
    """
    check_observation(y, f)
    chain = operator_chain(f)
    if not isinstance(chain[-1], Downsample) or not all(isinstance(op, Blur) for op in chain[:-1]):
        raise InputError(
            f"bicubic is a super-resolution method and needs f to be a Downsample (optionally after a Blur), "
            f"got {type(f).__name__}; use biharmonic for a Mask."
        )
    shape = clean_shape(y, f, G)
    return bicubic_upsample(y, (shape[2], shape[3])).clamp(0, 1)
