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
from torch import Tensor, nn

from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.models.observation import observe
from brgm_pyro.stylegan2 import to_unit

__all__ = ["model"]


def model(y: Tensor, forward: nn.Module, generator: nn.Module, params: BRGMParams,
          observed: Tensor | None = None, perceptual: nn.Module | None = None,
          y_features: Tensor | None = None) -> Tensor:
    """BRGM without the colinearity factor; arguments as :func:`brgm_pyro.models.brgm.model`."""
    batch = y.shape[0]
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    with pyro.plate("images", batch):
        w = pyro.sample("w", dist.Normal(prior_loc, generator.w_std).to_event(2))
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        y_clean = forward(x)
        observe(y, y_clean, params, observed, perceptual, y_features)
    return x
