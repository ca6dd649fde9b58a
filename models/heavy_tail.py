"""BRGM with a heavy-tailed prior on the latents: Student-t instead of Normal.

    w_{l,d} ~ StudentT(DEGREES_OF_FREEDOM, w_avg_d, w_std)    same centre and scale as the paper's prior
    factor    kappa * sum_{i<j} cos(w_i, w_j)
    x       = G(w)
    y       ~ Normal(f(x), sigma_pixel^2)                      on observed pixels
    phi(y)  ~ Normal(phi(f(x)), sigma_percept^2)

Near w_avg the density is close to the Gaussian one; far from it the penalty grows like
log |w - w_avg| instead of (w - w_avg)^2, so the data may pull single coordinates far out
(images the mapping network rarely produces), at the price of less regularisation.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from torch import Tensor, nn

from brgm_pyro.models.brgm import BRGMParams, colinearity
from brgm_pyro.models.observation import observe
from brgm_pyro.stylegan2 import to_unit

__all__ = ["DEGREES_OF_FREEDOM", "model"]

DEGREES_OF_FREEDOM = 5.0
"""Degrees of freedom of the Student-t prior: smaller is heavier-tailed, infinity is the paper's Normal."""


def model(y: Tensor, forward: nn.Module, generator: nn.Module, params: BRGMParams,
          observed: Tensor | None = None, perceptual: nn.Module | None = None,
          y_features: Tensor | None = None) -> Tensor:
    """BRGM with a Student-t prior on w; arguments as :func:`brgm_pyro.models.brgm.model`."""
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    with pyro.plate("images", y.shape[0]):
        w = pyro.sample("w", dist.StudentT(DEGREES_OF_FREEDOM, prior_loc, generator.w_std).to_event(2))
        pyro.factor("colinear", params.kappa * colinearity(w))
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        y_clean = forward(x)
        observe(y, y_clean, params, observed, perceptual, y_features)
    return x
