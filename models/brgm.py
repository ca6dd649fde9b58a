"""The BRGM graphical model (Marinescu, Moyer, Golland; paper Fig. 3, Sec. 2 and Supp. A) in Pyro.

    w_{l,d} ~ Normal(w_avg_d, w_std^2)                          prior on the L x D latents (Eq. 3)
    factor    kappa * sum_{i<j} cos(w_i, w_j)                     von Mises colinearity, mean angle 0
    x       = G(w)                                                clean image (deterministic)
    y       ~ Normal(f(x), sigma_pixel^2)     on observed pixels  pixel likelihood (Eq. 5)
    phi(y)  ~ Normal(phi(f(x)), sigma_percept^2)  on observed pixels  perceptual likelihood (Eq. 5)

with one ``pyro.plate`` over the images of a batch. Images are in [0, 1], so ``sigma_pixel`` is in
units of the full intensity range. The negative log joint is, per image and up to constants,

    -log p(w, y) = 1/2 [ sum ((w - w_avg) / w_std)^2  -  2 kappa sum_{i<j} cos(w_i, w_j)
                        + sigma_pixel^-2 ||y - f(G(w))||^2_obs + sigma_percept^-2 ||phi(y) - phi(f(G(w)))||^2 ]

which is half the paper's Eq. 8: its weights are lambda_c = 2 kappa (Eq. 9 writes -2 kappa for the
term -sum cos), lambda_pixel = sigma_pixel^-2 and lambda_percept = sigma_percept^-2.

Presets (:data:`PRESETS`, built by :func:`preset`):

* ``"paper"``: Sec. 2.5's values, lambda_c = 0.03, lambda_pixel = 1e-5, lambda_percept = 0.01
  with images in [0, 255] as in the authors' code: kappa = 0.015,
  sigma_pixel = 1e-5^-1/2 / 255 = 1.24, sigma_percept = 0.01^-1/2 = 10 (Adam lr 1e-3).
* ``"brgm-reference"``: the authors' released code (brgm-pytorch, ``bayesmap_recon.py``): loss
  ``lambda_pix mean((255 (f(x) - y))^2) + lambda_perc mean(dphi^2) + lambda_w mean(((w - w_avg)/s)^2)
  + lambda_c sum_{i,j} (1 - cos(w_i, w_j))`` with lambda_pix 1e-3, lambda_perc 1e7, lambda_w 100,
  lambda_c 0.1, where ``s = sqrt(D) w_std`` is NVIDIA's scalar w spread (ours is per coordinate),
  means over the n_y pixels of y, the N_phi features and the L D latents; Adam lr 0.1, 501 steps,
  init at w_avg. Their loss is ``c`` times ours with ``c = 2 lambda_w / (L D^2)``, which gives
  ``sigma_pixel^2 = lambda_w n_y / (L D^2 lambda_pix 255^2)``,
  ``sigma_percept^2 = lambda_w N_phi / (L D^2 lambda_perc)`` and ``kappa = lambda_c L D^2 / lambda_w``
  (each ordered pair counted twice in their sum over i, j gives the factor 2 that cancels).
* ``"default"``: a registered prior's settings that measured best on its validation images (its
  model card; ``bp.reconstruct`` reads them), else :class:`BRGMParams` ``()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from brgm_pyro.errors import InputError
from brgm_pyro.models.observation import observe_features, observe_pixels
from brgm_pyro.stylegan2 import to_unit

__all__ = ["BRGMParams", "PRESETS", "preset", "model", "colinearity"]


@dataclass(frozen=True)
class BRGMParams:
    """The known parameters of the graphical model (shaded nodes of the paper's Fig. 3).

    Attributes:
        sigma_pixel: standard deviation of the pixel noise of y, images in [0, 1].
        sigma_percept: standard deviation of the noise on the perceptual features phi(y).
        kappa: concentration of the von Mises prior on the angles between the L latents
            (kappa = 0 removes the colinearity factor; larger kappa pulls the w_i together).
        sigma_reach: standard deviation per clean pixel of the prior's reach residual, the part of
            an image no G(w) produces (``brgm_pyro.uncertainty.discrepancy``; 0: none). The paper's model has no
            such term and ignores it; the "reach" model puts it in the likelihood.
            ``sample_posterior`` sets it from its ``sigma_reach`` argument (the prior card's).
    """

    sigma_pixel: float = 0.05
    sigma_percept: float = 0.3
    kappa: float = 0.5
    sigma_reach: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sigma_pixel", "sigma_percept"):
            value = getattr(self, name)
            if not (value > 0 and value < float("inf")):
                raise InputError(f"{name} must be a positive finite number, got {value!r}.")
        for name in ("kappa", "sigma_reach"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise InputError(f"{name} must be a non-negative finite number, got {value!r}.")


def colinearity(w: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} cos(w_i, w_j) for w (..., L, D); returns (...,)."""
    unit = nn.functional.normalize(w, dim=-1)
    cos = unit @ unit.transpose(-1, -2)
    num_ws = w.shape[-2]
    return (cos.sum(dim=(-1, -2)) - num_ws) / 2


def model(y: Tensor, forward: nn.Module, generator: nn.Module, params: BRGMParams,
          observed: Tensor | None = None, perceptual: nn.Module | None = None,
          y_features: Tensor | None = None) -> Tensor:
    """The BRGM model for a batch of corrupted images ``y`` (B, C, h, w) in [0, 1].

    Args:
        y: corrupted images.
        forward: the corruption f, mapping (B, C, H, W) images to y's shape.
        generator: frozen StyleGAN2 generator with ``synthesis``, ``num_ws``, ``w_dim``, ``w_avg``, ``w_std``.
        params: sigma_pixel, sigma_percept, kappa.
        observed: 0/1 mask broadcastable to y (1 = observed); None observes every pixel.
        perceptual: feature network phi (None: no perceptual likelihood).
        y_features: phi(y), (B, N), computed once outside the model.

    Returns the clean images G(w) in [0, 1], (B, C, H, W).
    """
    batch = y.shape[0]
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    with pyro.plate("images", batch):
        w = pyro.sample("w", dist.Normal(prior_loc, generator.w_std).to_event(2))
        pyro.factor("colinear", params.kappa * colinearity(w))
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        y_clean = forward(x)
        observe_pixels(y, y_clean, params.sigma_pixel, observed)
        observe_features(y_features, y_clean, perceptual, params.sigma_percept, observed)
    return x


def preset(
    name: str,
    num_ws: int | None = None,
    w_dim: int | None = None,
    num_pixels: int | None = None,
    num_features: int | None = None,
) -> BRGMParams:
    """The :class:`BRGMParams` of a named preset.

    ``"brgm-reference"`` depends on the problem's sizes (the authors' loss averages its terms):
    ``num_ws`` L and ``w_dim`` D of the generator, ``num_pixels`` n_y = C h w of y (masked pixels
    included, as in their code) and ``num_features`` N_phi of the perceptual network.
    """
    if name == "paper":
        return BRGMParams(sigma_pixel=1e-5**-0.5 / 255.0, sigma_percept=0.01**-0.5, kappa=0.03 / 2)
    if name == "brgm-reference":
        if None in (num_ws, w_dim, num_pixels):
            raise InputError("The brgm-reference preset needs num_ws, w_dim and num_pixels of the problem.")
        lam_pix, lam_perc, lam_w, lam_c = 1e-3, 1e7, 100.0, 0.1
        latent_scale = num_ws * w_dim**2 / lam_w  # = 2 / c, c the ratio of their loss to ours
        features = num_features if num_features is not None else 1
        return BRGMParams(
            sigma_pixel=(num_pixels / (latent_scale * lam_pix * 255.0**2)) ** 0.5,
            sigma_percept=(features / (latent_scale * lam_perc)) ** 0.5,
            kappa=lam_c * latent_scale,
        )
    if name == "default":
        return DEFAULT
    raise InputError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")


DEFAULT = BRGMParams()
PRESETS = ("default", "paper", "brgm-reference")
