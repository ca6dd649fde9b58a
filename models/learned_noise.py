"""BRGM with an unknown noise level: ``sigma_pixel`` is a latent variable with a prior.

The paper fixes sigma_pixel (Sec. 2.3) and names an unknown noise level as future work. Here each
image gets its own noise level, inferred with w:

    sigma_pixel^2 ~ Scaled-Inv-chi^2(nu_0, sigma_0^2)                 sigma_0 = params.sigma_pixel, per image
    w_{l,d}       ~ Normal(w_avg_d, w_std^2)
    factor          kappa * sum_{i<j} cos(w_i, w_j)
    x             = G(w)
    y             ~ Normal(f(x), sigma_pixel^2)                        on the n observed pixels
    phi(y)        ~ Normal(phi(f(x)), sigma_percept^2)

The prior on the noise variance is the conjugate one (Gelman et al., *Bayesian Data Analysis*,
Sec. 2.6): an inverse gamma with shape nu_0 / 2 and scale nu_0 sigma_0^2 / 2, i.e. nu_0 pseudo-
observations of squared noise sigma_0^2. ``NOISE_PRIOR_DOF`` = nu_0 = 1 makes it weak: the standard
deviation of log sigma_pixel under it is 1.1 (a factor of 3), and its median is 1.5 sigma_0.
``params.sigma_pixel`` is the prior's scale instead of the known value.

Conjugacy lets the samplers integrate sigma_pixel out (:data:`collapsed`): with RSS(w) the sum of
squared residuals y - f(G(w)) on the observed pixels,

    p(y | w)                 = Gamma(a + n/2) / Gamma(a) * b^a / (b + RSS/2)^(a + n/2) * (2 pi)^(-n/2)
    sigma_pixel^2 | w, y     ~ InverseGamma(a + n/2, b + RSS(w)/2),      a = nu_0/2, b = nu_0 sigma_0^2/2

so NUTS, HMC and SVI run on w alone (``collapsed_model``, a multivariate Student-t likelihood of the
residual), and each draw of w gets its sigma_pixel from the exact conditional (``draw_sigma_pixel``).
The draws are those of the joint posterior p(w, sigma_pixel | y) of ``model``, without the funnel
between sigma_pixel and the spread of w that stalls a sampler on the joint (docs/results/mcmc.md).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import PowerTransform
from torch import Tensor, nn

from brgm_pyro.models.brgm import BRGMParams, colinearity
from brgm_pyro.models.observation import observe, observe_features
from brgm_pyro.models.protocol import Collapsed
from brgm_pyro.stylegan2 import to_unit

__all__ = ["NOISE_PRIOR_DOF", "collapsed", "collapsed_model", "draw_sigma_pixel", "model", "noise_and_image", "noise_prior"]

NOISE_PRIOR_DOF = 1.0
"""nu_0, the prior's degrees of freedom: how many pseudo-observations of squared noise sigma_0^2 it is worth."""


def _shape_scale(params: BRGMParams, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) of the inverse-gamma prior on sigma_pixel^2."""
    nu = like.new_tensor(NOISE_PRIOR_DOF)
    return nu / 2, nu * params.sigma_pixel**2 / 2


def noise_prior(params: BRGMParams, batch: int, like: torch.Tensor) -> dist.TorchDistribution:
    """The prior of sigma_pixel, (batch,): the square root of an inverse gamma on its square."""
    a, b = _shape_scale(params, like)
    variance = dist.InverseGamma(a.expand(batch), b.expand(batch))
    return dist.TransformedDistribution(variance, [PowerTransform(like.new_tensor(0.5))])


def _residual(y: torch.Tensor, y_clean: torch.Tensor, observed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """RSS and n per image over the last three dims (observed pixels only); y_clean may have extra leading dims."""
    squared = (y - y_clean).square()
    if observed is None:
        mask = torch.ones_like(y, dtype=torch.bool)
    else:
        mask = observed.bool().expand_as(y)
    rss = (squared * mask).sum((-3, -2, -1))
    return rss, mask.sum((-3, -2, -1)).to(y.dtype)


def noise_and_image(y: Tensor, forward: nn.Module, generator: nn.Module,
                    params: BRGMParams) -> tuple[Tensor, Tensor, Tensor]:
    """The story up to the observation, inside the images' plate: sigma_pixel ~ its prior, w ~ the
    prior, the colinearity factor and x = G(w). Returns (sigma_pixel (B,), x, f(x))."""
    sigma_pixel = pyro.sample("sigma_pixel", noise_prior(params, y.shape[0], y))
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    w = pyro.sample("w", dist.Normal(prior_loc, generator.w_std).to_event(2))
    pyro.factor("colinear", params.kappa * colinearity(w))
    x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
    return sigma_pixel, x, forward(x)


def model(y: Tensor, forward: nn.Module, generator: nn.Module, params: BRGMParams,
          observed: Tensor | None = None, perceptual: nn.Module | None = None,
          y_features: Tensor | None = None) -> Tensor:
    """BRGM with a latent per-image ``sigma_pixel`` (site "sigma_pixel", shape (B,)); arguments as
    :func:`brgm_pyro.models.brgm.model`. Returns G(w) in [0, 1], (B, C, H, W)."""
    with pyro.plate("images", y.shape[0]):
        sigma_pixel, x, y_clean = noise_and_image(y, forward, generator, params)
        observe(y, y_clean, params, observed, perceptual, y_features, sigma_pixel[:, None, None, None])
    return x


def collapsed_model(y: Tensor, forward: nn.Module, generator: nn.Module, params: BRGMParams,
                    observed: Tensor | None = None, perceptual: nn.Module | None = None,
                    y_features: Tensor | None = None) -> Tensor:
    """:func:`model` with sigma_pixel integrated out: the same posterior of w, with w its only latent."""
    a, b = _shape_scale(params, y)
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    with pyro.plate("images", y.shape[0]):
        w = pyro.sample("w", dist.Normal(prior_loc, generator.w_std).to_event(2))
        pyro.factor("colinear", params.kappa * colinearity(w))
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        y_clean = forward(x)
        rss, n = _residual(y, y_clean, observed)
        log_marginal = (
            torch.lgamma(a + n / 2) - torch.lgamma(a) + a * b.log()
            - (a + n / 2) * torch.log(b + rss / 2) - n / 2 * math.log(2 * math.pi)
        )
        pyro.factor("y", log_marginal)
        observe_features(y_features, y_clean, perceptual, params.sigma_percept, observed)
    return x


@torch.no_grad()
def draw_sigma_pixel(images: torch.Tensor, model_kwargs: dict) -> dict[str, torch.Tensor]:
    """sigma_pixel | w, y for each draw: ``images`` are G(w) of S draws, (S, B, C, H, W) in [0, 1]
    (unclamped, as the model computes them); returns {"sigma_pixel": (S, B)}."""
    y, forward, params = model_kwargs["y"], model_kwargs["forward"], model_kwargs["params"]
    rss = []
    for chunk in images.split(64):
        y_clean = torch.stack([forward(draw) for draw in chunk.to(y.device)])
        rss_chunk, n = _residual(y, y_clean, model_kwargs.get("observed"))
        rss.append(rss_chunk)
    rss = torch.cat(rss)
    a, b = _shape_scale(params, y)
    variance = dist.InverseGamma(a + n / 2, b + rss / 2).sample()
    return {"sigma_pixel": variance.sqrt()}


collapsed = Collapsed(model=collapsed_model, conditional=draw_sigma_pixel, sites=("sigma_pixel",))
"""How the inference integrates sigma_pixel out of :func:`model` (see the module notes); the registry
(``variants``) gives it to the drivers as ``BRGMModel.collapsed``."""
