"""A reconstruction problem, checked and ready for the model: y, f, G and phi on one device.

The first step of the data path (inputs -> model -> inference driver -> result): everything that is
not the model's story happens here once, before any inference: input checks, moving to G's
device, the observation mask of f, phi(y) computed once, the prior's card read
(``brgm_pyro.card``), and the model's parameters resolved from a preset or that card.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from brgm_pyro.card import PriorCard
from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.forward import Operator, as_operator
from brgm_pyro.models import brgm
from brgm_pyro.perceptual import get_perceptual

__all__ = ["RANGE_MARGIN", "Problem", "check_images", "check_measurement", "frozen", "prepare_problem"]


RANGE_MARGIN = 1.0
"""How far y may lie outside the values f can produce from images in [0, 1]: noise of any plausible
level stays inside it; an 8-bit image (values to 255) or a wrongly scaled one does not."""


def check_images(y: torch.Tensor, name: str = "y") -> None:
    """One-sentence errors for images that are not (B, C, H, W) floats in [0, 1] without NaN."""
    check_measurement(y, name)
    lo, hi = float(y.min()), float(y.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{name} has values in [{lo:.3g}, {hi:.3g}], outside [0, 1]; rescale it to [0, 1] first.")


def check_measurement(y: torch.Tensor, name: str = "y") -> None:
    """One-sentence errors for a measurement that is not a (B, C, H, W) float tensor of finite values."""
    if not isinstance(y, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(y).__name__}.")
    if y.dim() != 4:
        raise InputError(
            f"{name} must have shape (B, C, H, W), got {tuple(y.shape)}; use {name}[None] for a single image."
        )
    if not y.is_floating_point():
        raise InputError(f"{name} must be a float tensor in [0, 1], got {y.dtype}; divide 8-bit images by 255.")
    if not torch.isfinite(y).all():
        raise InputError(
            f"{name} contains NaN or infinite values; replace them or mark those pixels as unobserved with a Mask."
        )


def _check_range(y: torch.Tensor, forward: nn.Module, clean_shape: tuple[int, ...], observed: torch.Tensor) -> None:
    """y is data: f of an image in [0, 1] plus noise may leave [0, 1] (a bicubic kernel's negative lobes,
    a noisy measurement). Refuse only values that no f of such an image and no plausible noise reach:
    each observed output within [f_min - RANGE_MARGIN, f_max + RANGE_MARGIN], f_min and f_max its
    smallest and largest value over images in [0, 1] (from the sums of its negative and positive
    weights, where f is an Operator; else [0, 1])."""
    with torch.no_grad():
        if isinstance(forward, Operator) and forward.linear:
            ones = torch.ones(clean_shape, device=y.device, dtype=y.dtype)
            total, absolute = forward(ones), forward._abs_forward(ones)
            low, high = (total - absolute) / 2, (total + absolute) / 2
        else:
            low, high = torch.zeros_like(y), torch.ones_like(y)
        outside = ((y < low - RANGE_MARGIN) | (y > high + RANGE_MARGIN)) & observed.bool().expand_as(y)
    if bool(outside.any()):
        lo, hi = float(y.min()), float(y.max())
        raise InputError(
            f"y has values in [{lo:.3g}, {hi:.3g}], which no image in [0, 1] under this corruption, plus noise, gives "
            f"(f's outputs lie in [{float(low.min()):.3g}, {float(high.max()):.3g}]); rescale y to the images' [0, 1] "
            "range first (8-bit images: divide by 255)."
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
        y: the corrupted images, (B, C, h, w), 0 where f does not observe them.
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

    def tile(self, repeats: int) -> Problem:
        """The problem of the batch repeated ``repeats`` times, ``y.repeat(repeats, 1, 1, 1)`` (each image's
        mask stays that image's): K starting points of B images run as one batch of K B through the plate."""
        if repeats == 1:
            return self
        forward = self.forward.tile(repeats) if isinstance(self.forward, Operator) else self.forward
        observed = self.observed.repeat(repeats, 1, 1, 1) if self.observed.shape[0] > 1 else self.observed
        features = None if self.y_features is None else self.y_features.repeat(repeats, 1)
        return replace(self, y=self.y.repeat(repeats, 1, 1, 1), forward=forward, observed=observed,
                       y_features=features)

    def select(self, index: int) -> Problem:
        """The problem of image ``index`` of the batch alone."""
        forward = self.forward.select(index) if isinstance(self.forward, Operator) else self.forward
        observed = self.observed[index : index + 1] if self.observed.shape[0] > 1 else self.observed
        features = None if self.y_features is None else self.y_features[index : index + 1]
        return replace(self, y=self.y[index : index + 1], forward=forward, observed=observed, y_features=features)

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


def _output_shape(forward: nn.Module, clean_shape: tuple[int, ...], device: torch.device) -> torch.Size:
    """The shape of f(x): the operator's ``output_shape``, or that of f applied to zeros for a module
    that does not say (a user's function of the images)."""
    if hasattr(forward, "output_shape"):
        return forward.output_shape(clean_shape)
    with torch.no_grad():
        return forward.to(device)(torch.zeros(clean_shape, device=device)).shape


def _observed(forward: nn.Module, clean_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """f's observation mask, broadcastable to y: the operator's, or every output for a module that does not say."""
    if hasattr(forward, "observed"):
        return forward.observed(clean_shape, device=device, dtype=dtype)
    out = _output_shape(forward, clean_shape, device)
    return torch.ones(1, 1, out[2], out[3], device=device, dtype=dtype)


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
    """Check the inputs, move them to G's device and compute what the model needs once.

    y is set to 0 where f does not observe it (``f.observe``), once, so that what a hole holds never
    enters phi(y) or any likelihood. A deepinv physics becomes an operator here (``forward.as_operator``);
    without ``params``, the std of its Gaussian noise (``f.noise_sigma``) is sigma_pixel."""
    check_measurement(y)
    if not isinstance(forward, nn.Module):
        raise InputTypeError(f"f must be a torch.nn.Module corruption operator, got {type(forward).__name__}.")
    device = generator.w_avg.device
    clean_shape = (y.shape[0], generator.channels, generator.resolution, generator.resolution)
    forward = as_operator(forward, clean_shape[1:])
    try:
        expected = tuple(_output_shape(forward, clean_shape, device))
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
    observed = _observed(forward, clean_shape, device, y.dtype)
    _check_range(y, forward, clean_shape, observed)
    y = forward.observe(y) if isinstance(forward, Operator) else y * observed
    with torch.no_grad():
        y_features = phi(y) if phi is not None else None
    resolved = _resolve_params(params, card, generator, y, y_features)
    noise_sigma = getattr(forward, "noise_sigma", None)
    if params is None and noise_sigma:
        resolved = replace(resolved, sigma_pixel=noise_sigma)
    return Problem(y, forward, generator, resolved, observed, phi, y_features, card)
