"""A reconstruction problem, checked and ready for the model: y, f, G and phi on one device.

The first step of the data path (inputs -> model -> inference driver -> result): everything that is
not the model's story happens here once, before any inference: input checks, moving to G's
device, the observation mask of f, phi(y) computed once, the prior's card read
(``brgm_pyro.card``), and the model's parameters resolved from a preset or that card.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from brgm_pyro.card import PriorCard
from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.models import brgm
from brgm_pyro.perceptual import get_perceptual

__all__ = ["Problem", "check_images", "frozen", "prepare_problem"]


def check_images(y: torch.Tensor, name: str = "y") -> None:
    """One-sentence errors for images that are not (B, C, H, W) floats in [0, 1] without NaN."""
    if not isinstance(y, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(y).__name__}.")
    if y.dim() != 4:
        raise InputError(
            f"{name} must have shape (B, C, H, W), got {tuple(y.shape)}; use {name}[None] for a single image."
        )
    if not y.is_floating_point():
        raise InputError(f"{name} must be a float tensor in [0, 1], got {y.dtype}; divide 8-bit images by 255.")
    if torch.isnan(y).any():
        raise InputError(f"{name} contains NaN values; replace them or mark those pixels as unobserved with a Mask.")
    lo, hi = float(y.min()), float(y.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"{name} has values in [{lo:.3g}, {hi:.3g}], outside [0, 1]; rescale it to [0, 1] first (a bicubic "
            "Downsample of an image in [0, 1] overshoots a little: simulate y as f(x).clamp(0, 1))."
        )


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily stop gradients to a module's parameters (they are not inferred), restoring them after."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


@dataclass
class Problem:
    """A reconstruction problem ready for the model: y, f, G and phi on one device.

    Attributes:
        y: the corrupted images, (B, C, h, w) in [0, 1].
        forward: the corruption f.
        generator: G.
        params: the model's known parameters (sigma_pixel, sigma_percept, kappa).
        observed: f's observation mask (1 = observed), broadcastable to y.
        perceptual: the feature network phi, or None (no perceptual likelihood).
        y_features: phi(y), (B, N), or None.
        card: G's card, the drivers' defaults (schedule, sigma_reach).
    """

    y: torch.Tensor
    forward: nn.Module
    generator: nn.Module
    params: brgm.BRGMParams
    observed: torch.Tensor
    perceptual: nn.Module | None
    y_features: torch.Tensor | None
    card: PriorCard

    def model_kwargs(self) -> dict[str, Any]:
        """The arguments of ``brgm.model`` (and of every model with its signature) for this problem."""
        return dict(
            y=self.y,
            forward=self.forward,
            generator=self.generator,
            params=self.params,
            observed=self.observed,
            perceptual=self.perceptual,
            y_features=self.y_features,
        )


def _resolve_params(
    params: brgm.BRGMParams | str | None, card: PriorCard, generator: nn.Module, y: torch.Tensor,
    y_features: torch.Tensor | None,
) -> brgm.BRGMParams:
    if isinstance(params, brgm.BRGMParams):
        return params
    name = params or "default"
    if name == "default" and card.params is not None:
        return card.params
    num_features = y_features.shape[-1] if y_features is not None else None
    return brgm.preset(name, generator.num_ws, generator.w_dim, y[0].numel(), num_features)


def prepare_problem(
    y: torch.Tensor,
    forward: nn.Module,
    generator: nn.Module,
    params: brgm.BRGMParams | str | None = None,
    perceptual: str | nn.Module | None = "auto",
) -> Problem:
    """Check the inputs, move them to G's device and compute what the model needs once."""
    check_images(y)
    if not isinstance(forward, nn.Module):
        raise InputTypeError(f"f must be a torch.nn.Module corruption operator, got {type(forward).__name__}.")
    device = generator.w_avg.device
    clean_shape = (y.shape[0], generator.channels, generator.resolution, generator.resolution)
    try:
        expected = tuple(forward.output_shape(clean_shape))
    except ValueError as err:
        raise InputError(f"The corruption cannot apply to the generator's images: {err}") from None
    if tuple(y.shape) != expected:
        raise InputError(
            f"y has shape {tuple(y.shape)}, but f applied to the generator's {generator.resolution}x"
            f"{generator.resolution} images with {generator.channels} channel(s) gives {expected}; "
            "resize the input or change the corruption (factor, mask) to match."
        )
    y = y.to(device)
    forward = forward.to(device)
    card = PriorCard.of(generator)
    phi = get_perceptual(card.perceptual if perceptual == "auto" else perceptual)
    if phi is not None:
        phi = phi.to(device)
    observed = forward.observed(clean_shape, device=device, dtype=y.dtype)
    with torch.no_grad():
        y_features = phi(y) if phi is not None else None
    resolved = _resolve_params(params, card, generator, y, y_features)
    return Problem(y, forward, generator, resolved, observed, phi, y_features, card)
