"""Explicit 2-D kernels of Blur and Downsample: their checks, their separable factors, their 1-D matrices."""

from __future__ import annotations

import torch

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.forward.base import shape_text

__all__ = ["SEPARABLE_TOLERANCE", "check_kernel", "conv_axis_matrix", "padding_error", "separable_factors"]

SEPARABLE_TOLERANCE = 1e-7
"""A kernel is separable (an outer product) when its second singular value is below this fraction of its first."""


def check_kernel(kernel: torch.Tensor, owner: str) -> torch.Tensor:
    """Validate an explicit 2-D kernel; return it as a floating-point tensor."""
    if not isinstance(kernel, torch.Tensor):
        raise InputTypeError(
            f"{owner} kernel must be a 2-D torch.Tensor, got {type(kernel).__name__}; "
            "pass e.g. torch.ones(3, 3) / 9."
        )
    if kernel.dim() != 2 or kernel.numel() == 0:
        raise InputError(
            f"{owner} kernel must be a non-empty 2-D tensor (kh, kw), got shape {shape_text(kernel.shape)}; "
            "one kernel is applied to every channel."
        )
    if not kernel.is_floating_point():
        kernel = kernel.to(torch.float32)
    if not torch.isfinite(kernel).all():
        raise InputError(f"{owner} kernel holds NaN or infinite values; pass a finite kernel.")
    return kernel


def padding_error(owner: str, pad: int, kernel_size: int, image_size: int, axis: str) -> InputError:
    return InputError(
        f"{owner} kernel of {kernel_size} pixels along {axis} needs reflect padding of {pad} pixels, "
        f"but an image of {image_size} pixels allows at most {image_size - 1}; use a smaller kernel "
        "or a larger image."
    )


def separable_factors(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(k_h, k_w), float64, with kernel = outer(k_h, k_w) when the kernel is one (within
    ``SEPARABLE_TOLERANCE``), else None."""
    u, s, vh = torch.linalg.svd(kernel.detach().double().cpu())
    if s[0] == 0 or (s.numel() > 1 and s[1] > SEPARABLE_TOLERANCE * s[0]):
        return None
    root = s[0].sqrt()
    return u[:, 0] * root, vh[0] * root


def conv_axis_matrix(taps: torch.Tensor, index: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """The matrix (n_out, size) of a 1-D correlation with ``taps`` at ``stride`` over an axis padded by
    the index map ``index`` (``brgm_pyro.forward.padding``): row i = sum_t taps[t] e_{index[i stride + t]}."""
    n_out = (index.numel() - taps.numel()) // stride + 1
    matrix = torch.zeros(n_out, size, dtype=torch.float64)
    rows = torch.arange(n_out)
    for t, weight in enumerate(taps.double()):
        source = index[rows * stride + t]
        inside = source >= 0
        matrix.index_put_((rows[inside], source[inside]), weight.expand(int(inside.sum())), accumulate=True)
    return matrix
