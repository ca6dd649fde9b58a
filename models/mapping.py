"""BRGM with G's own prior: z ~ N(0, I) and w = mapping(z) on every layer, the reach in the likelihood.

    sigma_pixel^2 ~ Scaled-Inv-chi^2(nu_0, sigma_0^2)          unknown noise level, as in ``learned_noise``
    z             ~ Normal(0, I)                               (z_dim,) per image: the prior G was trained on
    w             = mapping(z), the same w for every layer     (deterministic)
    x             = G(w) + r,   r ~ Normal(0, sigma_reach^2 I)  the prior's reach, integrated out
    y             ~ Normal(f(G(w)), sigma_reach^2 F F^T + sigma_pixel^2 I)   on observed pixels
    phi(y)        ~ Normal(phi(f(G(w))), sigma_percept^2)

The paper's model puts an isotropic Gaussian on W+ (num_ws x w_dim latents fitted to the mapping's
output statistics); its draws are images G never learnt to make. This is the prior G was trained
on: a draw of it is one of G's own samples, the bank of the mode search draws from it exactly, and
the latent space is z_dim-dimensional (128 for the embedded prior, against 1,024 for W+), so a
Laplace approximation at each mode costs an eighth of W+'s. The price is the reach: fewer images
are exactly G(mapping(z)) than G(w) for some w in W+, so the residual r carries more (the card's
``sigma_reach`` is measured in W+; docs/model.md says which default the measurements chose).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from torch import Tensor, nn

from brgm_pyro.errors import InputError
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.models.learned_noise import noise_prior
from brgm_pyro.models.observation import observe_features
from brgm_pyro.stylegan2 import to_unit
from brgm_pyro.uncertainty.discrepancy import reach_log_likelihood

__all__ = ["model", "start"]


def model(y: Tensor, forward: nn.Module, generator: nn.Module, params: BRGMParams,
          observed: Tensor | None = None, perceptual: nn.Module | None = None,
          y_features: Tensor | None = None) -> Tensor:
    """BRGM with G's own prior on a latent z (B, z_dim), w = mapping(z) recorded at the site "w", the reach
    in the likelihood and a latent ``sigma_pixel`` (B,); arguments as :func:`brgm_pyro.models.brgm.model`,
    with ``params.sigma_reach`` > 0. Returns G(w) in [0, 1]."""
    if not params.sigma_reach > 0:
        raise InputError(
            "model='mapping' needs params.sigma_reach > 0, the prior's reach; sample_posterior sets it from the "
            "prior's card (or its sigma_reach argument)."
        )
    batch = y.shape[0]
    with pyro.plate("images", batch):
        sigma_pixel = pyro.sample("sigma_pixel", noise_prior(params, batch, y))
        z = pyro.sample("z", dist.Normal(y.new_zeros(generator.z_dim), 1.0).to_event(1))
        w = pyro.deterministic("w", generator.mapping(z), event_dim=2)
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        y_clean = forward(x)
        pyro.factor("y", reach_log_likelihood(y - y_clean, forward, sigma_pixel, params.sigma_reach))
        observe_features(y_features, y_clean, perceptual, params.sigma_percept, observed)
    return x


def start(z: Tensor, w: Tensor, generator: nn.Module) -> dict[str, Tensor]:
    """The latents of this model at a draw (z, w = mapping(z)) of G's prior: z itself."""
    return {"z": z}
