"""What every baseline method shares: the checks of y and f, and the shape of the images to reconstruct.

The conventions are those of ``bp.reconstruct``: y is a float (B, C, h, w) batch in [0, 1], f an
operator of :mod:`brgm_pyro.forward` that maps the clean images (B, C, H, W) to y's shape. With a
generator G the clean images have G's resolution and channels; without one they are the smallest
images f maps onto y (a Downsample multiplies the size by its factor, the other operators keep it).
"""

from __future__ import annotations

import torch
from torch import nn

from brgm_pyro.errors import CheckpointError, InputError, InputTypeError
from brgm_pyro.forward import Compose, Downsample, Operator

__all__ = ["check_observation", "clean_shape", "operator_chain", "read_weights"]


def read_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the header metadata of a shipped network's safetensors file (the supervised
    networks, the diffusion denoiser); CheckpointError with one sentence where it does not read."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(path), metadata
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); train it again.") from None


def check_observation(y: torch.Tensor, f: Operator) -> None:
    """One-sentence errors for y that is not a (B, C, h, w) float batch in [0, 1], or f not an operator."""
    if not isinstance(y, torch.Tensor):
        raise InputTypeError(f"y must be a torch.Tensor of shape (B, C, H, W), got {type(y).__name__}.")
    if y.dim() != 4:
        raise InputError(f"y must have shape (B, C, H, W), got {tuple(y.shape)}; use y[None] for a single image.")
    if not y.is_floating_point():
        raise InputError(f"y must be a float tensor in [0, 1], got {y.dtype}; divide 8-bit images by 255.")
    if not torch.isfinite(y).all():
        raise InputError("y contains NaN or infinite values; replace them or mark those pixels missing with a Mask.")
    low, high = float(y.min()), float(y.max())
    if low < 0 or high > 1:
        raise InputError(f"y has values in [{low:.3g}, {high:.3g}], outside [0, 1]; rescale it to [0, 1] first.")
    if not isinstance(f, Operator):
        raise InputTypeError(
            f"f must be a corruption operator of brgm_pyro.forward (Downsample, Mask, Blur, Compose), "
            f"got {type(f).__name__}."
        )


def operator_chain(f: Operator) -> list[Operator]:
    """The operators of f in the order they apply, nested Compose flattened."""
    if isinstance(f, Compose):
        return [inner for operator in f.operators for inner in operator_chain(operator)]
    return [f]


def clean_shape(y: torch.Tensor, f: Operator, G: nn.Module | None = None) -> torch.Size:
    """The shape (B, C, H, W) of the images x with f(x) of y's shape: G's images, or inferred from f."""
    b, c, h, w = y.shape
    if G is not None:
        shape = torch.Size((b, G.channels, G.resolution, G.resolution))
    else:
        for operator in reversed(operator_chain(f)):
            if isinstance(operator, Downsample):
                h, w = h * operator.factor, w * operator.factor
        shape = torch.Size((b, c, h, w))
    try:
        expected = f.output_shape(shape)
    except ValueError as err:
        raise InputError(f"The corruption cannot apply to images of shape {tuple(shape)}: {err}") from None
    if expected != y.shape:
        raise InputError(
            f"y has shape {tuple(y.shape)}, but f applied to images of shape {tuple(shape)} gives "
            f"{tuple(expected)}; resize the input or change the corruption (factor, mask) to match."
        )
    return shape
