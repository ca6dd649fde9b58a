"""BRGM with the prior's reach in the likelihood: y = f(G(w) + r) + n, r the residual no G(w) removes.

    sigma_pixel^2 ~ Scaled-Inv-chi^2(nu_0, sigma_0^2)            unknown noise level, as in ``learned_noise``
    w_{l,d}       ~ Normal(w_avg_d, w_std^2)
    factor          kappa * sum_{i<j} cos(w_i, w_j)
    x             = G(w) + r,   r ~ Normal(0, sigma_reach^2 I)    the prior's reach (``brgm_pyro.discrepancy``)
    y             ~ Normal(f(x), sigma_pixel^2)                   on observed pixels
    phi(y)        ~ Normal(phi(f(G(w))), sigma_percept^2)

With r integrated out, y | w ~ Normal(f(G(w)), sigma_reach^2 F F^T + sigma_pixel^2 I)
(``discrepancy.reach_log_likelihood``). ``learned_noise`` adds r to the predictive only, after
inferring w as if G(w) could be the truth; then the noise level shrinks to the MAP's own misfit
(0.015-0.02 on Fashion-MNIST inpainting, against the 0.03-0.05 by which the truth's best G(w) misses
the observed pixels) and the posterior of w excludes the images G(w) close to the truth
(``benchmarks/undercoverage.py``, reach). Here a w whose G(w) misses y by about sigma_reach stays
plausible, which is Kennedy and O'Hagan's point for calibration with a model discrepancy. The
predictive draws of the clean image are G(w) + r with r | y, w as before, so the whole posterior
is that of one joint model. sigma_reach is the prior card's.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from brgm_pyro.models.brgm import BRGMParams, colinearity
from brgm_pyro.models.learned_noise import noise_prior
from torch import nn

from brgm_pyro.discrepancy import reach_log_likelihood
from brgm_pyro.errors import InputError
from brgm_pyro.stylegan2 import to_unit

__all__ = ["model"]


def _sigma_reach(generator: nn.Module) -> float:
    value = (getattr(generator, "card", None) or {}).get("sigma_reach")
    if not value:
        raise InputError(
            "model='reach' needs the prior's sigma_reach from its card, and this generator has none; "
            "measure it with benchmarks/prior_quality.py, or use model='learned-noise'."
        )
    return float(value)


def model(
    y: torch.Tensor,
    forward: nn.Module,
    generator: nn.Module,
    params: BRGMParams,
    observed: torch.Tensor | None = None,
    perceptual: nn.Module | None = None,
    y_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """BRGM with the reach in the likelihood and a latent ``sigma_pixel`` (B,); arguments as
    :func:`brgm_pyro.models.brgm.model`. Returns G(w) in [0, 1], (B, C, H, W)."""
    batch = y.shape[0]
    sigma_reach = _sigma_reach(generator)
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    with pyro.plate("images", batch):
        sigma_pixel = pyro.sample("sigma_pixel", noise_prior(params, batch, y))
        w = pyro.sample("w", dist.Normal(prior_loc, generator.w_std).to_event(2))
        pyro.factor("colinear", params.kappa * colinearity(w))
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        y_clean = forward(x)
        pyro.factor("y", reach_log_likelihood(y - y_clean, forward, observed, sigma_pixel, sigma_reach))
        if perceptual is not None:
            pyro.sample(
                "y_features", dist.Normal(perceptual(y_clean), params.sigma_percept).to_event(1), obs=y_features
            )
    return x
