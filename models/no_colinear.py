"""BRGM without the colinearity factor: the L latents w_1 .. w_L are independent a priori.

    w_{l,d} ~ Normal(w_avg_d, w_std^2)
    x       = G(w)
    y       ~ Normal(f(x), sigma_pixel^2)                      on observed pixels
    phi(y)  ~ Normal(phi(f(x)), sigma_percept^2)

The same as ``brgm.model`` with kappa = 0 (``params.kappa`` is ignored): the ablation of the
paper's von Mises term (Sec. 2.2), written out so that the difference is one missing line.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from brgm_pyro.models.brgm import BRGMParams
from torch import nn

from brgm_pyro.stylegan2 import to_unit

__all__ = ["model"]


def model(
    y: torch.Tensor,
    forward: nn.Module,
    generator: nn.Module,
    params: BRGMParams,
    observed: torch.Tensor | None = None,
    perceptual: nn.Module | None = None,
    y_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """BRGM without the colinearity factor; arguments as :func:`brgm_pyro.models.brgm.model`."""
    batch = y.shape[0]
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    with pyro.plate("images", batch):
        w = pyro.sample("w", dist.Normal(prior_loc, generator.w_std).to_event(2))
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        y_clean = forward(x)
        noise = dist.Normal(y_clean, params.sigma_pixel)
        if observed is not None:
            noise = noise.mask(observed.bool())
        pyro.sample("y", noise.to_event(3), obs=y)
        if perceptual is not None:
            pyro.sample(
                "y_features", dist.Normal(perceptual(y_clean), params.sigma_percept).to_event(1), obs=y_features
            )
    return x
