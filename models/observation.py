"""The observation shared by the BRGM models: the pixel and perceptual likelihoods of y given the image.

    y      ~ Normal(f(x), sigma_pixel^2)          on the observed pixels    site "y"           (Eq. 5)
    phi(y) ~ Normal(phi(m * f(x)), sigma_percept^2)                         site "y_features"  (Eq. 5)

Called inside a model's ``pyro.plate("images", B)`` with y_clean = f(x), so each image's pixels
(C, h, w) and features (N,) are one event. Unobserved pixels (m = observed = 0) never enter either
likelihood: phi sees m * f(x), and phi(y) is computed on m * y (``f.observe(y)``, where the problem
is prepared), so what y holds in a hole never changes a result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from torch import nn

if TYPE_CHECKING:  # brgm.py imports this module
    from brgm_pyro.models.brgm import BRGMParams

__all__ = ["observe", "observe_features", "observe_pixels"]


def observe_pixels(
    y: torch.Tensor, y_clean: torch.Tensor, sigma_pixel: float | torch.Tensor, observed: torch.Tensor | None
) -> None:
    """y (B, C, h, w) ~ Normal(y_clean, sigma_pixel^2) on the pixels where ``observed`` is 1 (None: all).

    ``sigma_pixel`` is a number or a tensor broadcastable to y (e.g. one per image, (B, 1, 1, 1)).
    """
    noise = dist.Normal(y_clean, sigma_pixel)
    if observed is not None:
        noise = noise.mask(observed.bool())
    pyro.sample("y", noise.to_event(3), obs=y)


def observe_features(
    y_features: torch.Tensor | None, y_clean: torch.Tensor, perceptual: nn.Module | None, sigma_percept: float,
    observed: torch.Tensor | None = None,
) -> None:
    """phi(y) (B, N) ~ Normal(phi(observed * y_clean), sigma_percept^2); nothing without a feature network phi."""
    if perceptual is not None:
        seen = y_clean if observed is None else y_clean * observed
        pyro.sample("y_features", dist.Normal(perceptual(seen), sigma_percept).to_event(1), obs=y_features)


def observe(
    y: torch.Tensor,
    y_clean: torch.Tensor,
    params: BRGMParams,
    observed: torch.Tensor | None,
    perceptual: nn.Module | None,
    y_features: torch.Tensor | None,
    sigma_pixel: float | torch.Tensor | None = None,
) -> None:
    """The observation of ``brgm.model``, both likelihoods of y given y_clean = f(x): the pixels with
    ``params.sigma_pixel`` (or ``sigma_pixel``, a latent noise level), the features with
    ``params.sigma_percept``."""
    observe_pixels(y, y_clean, params.sigma_pixel if sigma_pixel is None else sigma_pixel, observed)
    observe_features(y_features, y_clean, perceptual, params.sigma_percept, observed)
