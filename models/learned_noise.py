"""BRGM with an unknown noise level: ``sigma_pixel`` is a latent variable with a prior.

The paper fixes sigma_pixel (Sec. 2.3) and names an unknown noise level as future work. Here each
image gets its own noise level, inferred with w:

    sigma_pixel ~ LogNormal(log sigma_0, NOISE_PRIOR_SCALE^2)    sigma_0 = params.sigma_pixel, per image
    w_{l,d}     ~ Normal(w_avg_d, w_std^2)
    factor        kappa * sum_{i<j} cos(w_i, w_j)
    x           = G(w)
    y           ~ Normal(f(x), sigma_pixel^2)                      on observed pixels
    phi(y)      ~ Normal(phi(f(x)), sigma_percept^2)

``params.sigma_pixel`` becomes the prior's median instead of the known value.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from brgm_pyro.models.brgm import BRGMParams, colinearity
from torch import nn

from brgm_pyro.stylegan2 import to_unit

__all__ = ["NOISE_PRIOR_SCALE", "model"]

NOISE_PRIOR_SCALE = 1.0
"""Standard deviation of log sigma_pixel under the prior: one standard deviation is a factor e."""


def model(
    y: torch.Tensor,
    forward: nn.Module,
    generator: nn.Module,
    params: BRGMParams,
    observed: torch.Tensor | None = None,
    perceptual: nn.Module | None = None,
    y_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """BRGM with a latent per-image ``sigma_pixel`` (site "sigma_pixel", shape (B,)); arguments as
    :func:`brgm_pyro.models.brgm.model`. Returns G(w) in [0, 1], (B, C, H, W)."""
    batch = y.shape[0]
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    with pyro.plate("images", batch):
        sigma_pixel = pyro.sample(
            "sigma_pixel", dist.LogNormal(y.new_tensor(math.log(params.sigma_pixel)), NOISE_PRIOR_SCALE)
        )
        w = pyro.sample("w", dist.Normal(prior_loc, generator.w_std).to_event(2))
        pyro.factor("colinear", params.kappa * colinearity(w))
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        y_clean = forward(x)
        noise = dist.Normal(y_clean, sigma_pixel[:, None, None, None])
        if observed is not None:
            noise = noise.mask(observed.bool())
        pyro.sample("y", noise.to_event(3), obs=y)
        if perceptual is not None:
            pyro.sample(
                "y_features", dist.Normal(perceptual(y_clean), params.sigma_percept).to_event(1), obs=y_features
            )
    return x
