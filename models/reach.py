"""BRGM with the prior's reach in the likelihood: y = f(G(w) + r) + n, r the residual no G(w) removes.

    sigma_pixel^2 ~ Scaled-Inv-chi^2(nu_0, sigma_0^2)            unknown noise level, as in ``learned_noise``
    w_{l,d}       ~ Normal(w_avg_d, w_std^2)
    factor          kappa * sum_{i<j} cos(w_i, w_j)
    x             = G(w) + r,   r ~ Normal(0, sigma_reach^2 I)    the prior's reach (``brgm_pyro.uncertainty.discrepancy``)
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
is that of one joint model. ``params.sigma_reach`` is the prior card's (``sample_posterior`` sets it).
"""

from __future__ import annotations

import pyro
from torch import Tensor, nn

from brgm_pyro.errors import InputError
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.models.learned_noise import noise_and_image
from brgm_pyro.models.observation import observe_features
from brgm_pyro.uncertainty.discrepancy import reach_log_likelihood

__all__ = ["model"]


def model(y: Tensor, forward: nn.Module, generator: nn.Module, params: BRGMParams,
          observed: Tensor | None = None, perceptual: nn.Module | None = None,
          y_features: Tensor | None = None) -> Tensor:
    """BRGM with the reach in the likelihood and a latent ``sigma_pixel`` (B,); arguments as
    :func:`brgm_pyro.models.brgm.model`, with ``params.sigma_reach`` > 0. Returns G(w) in [0, 1]."""
    if not params.sigma_reach > 0:
        raise InputError(
            "model='reach' needs params.sigma_reach > 0, the prior's reach; sample_posterior sets it from the "
            "prior's card (or its sigma_reach argument), or use model='learned-noise' for a prior without one."
        )
    with pyro.plate("images", y.shape[0]):
        sigma_pixel, x, y_clean = noise_and_image(y, forward, generator, params)
        pyro.factor("y", reach_log_likelihood(y - y_clean, forward, sigma_pixel, params.sigma_reach))
        observe_features(y_features, y_clean, perceptual, params.sigma_percept, observed)
    return x
