"""The "projector" baseline: StyleGAN2's projector (Karras et al., CVPR 2020, Sec. 5 and Appendix D) through f,
and the steps of the BRGM paper's Fig. 4 that lead from it to BRGM.

The recipe, written from the StyleGAN2 paper and applied to the corrupted image (the loss compares
f(G(w)) with y instead of G(w) with a clean target):

* one w in W, repeated over the L layers, starting at w_avg;
* every noise map n_i optimised from N(0, 1) and renormalised to zero mean and unit variance after
  every step, with the multi-scale regulariser
  ``alpha sum_i sum_j [(mean_xy n_ij(x, y) n_ij(x - 1, y))^2 + (mean_xy n_ij(x, y) n_ij(x, y - 1))^2]``,
  n_i0 = n_i and n_i,j+1 the 2 x 2 average pooling of n_ij down to 8 x 8 (shifts wrap around), alpha = 1e5;
* the loss ``||phi(f(G(w~))) - phi(y)||^2`` plus the regulariser: perceptual only. The paper's phi
  is LPIPS-VGG on 256 px images; here it is the prior card's feature network, which for the
  Fashion-MNIST priors is "fmnist" (an LPIPS-style distance on a Fashion-MNIST classifier), since
  a VGG trained on ImageNet is no perceptual metric for 32 px grayscale clothes;
* ramped-down noise on w: ``w~ = w + N(0, (0.05 sigma_w max(0, 1 - t / 0.75)^2)^2)`` per coordinate,
  t = step / steps, during the first three quarters, with sigma_w = sqrt(E ||w - w_avg||^2), which is
  sqrt(D) times G's per-coordinate w_std;
* Adam (betas 0.9, 0.999), 1000 steps, learning rate 0.1 ramped up linearly over the first 5% of the
  steps and down by a cosine over the last 25% (``brgm_pyro.inference.map.lr_factor``).

The BRGM paper's Fig. 4 changes the recipe one step at a time; each step is an option here, and
each row of the figure turns on one more: (a) the projector (defaults); (b) ``optimise_noise=False``:
G's own fixed noise, no regulariser; (c) ``w_plus=True``: one w per layer; (d) ``pixel=True``: the
pixel likelihood added; (e) ``prior=True``: the Gaussian prior on w; (f) ``colinear=True``: the
colinearity factor. From (d) on, the loss is BRGM's negative log joint with the terms turned on,
``1/2 sigma_percept^-2 ||dphi||^2 + 1/2 sigma_pixel^-2 ||y - f(x)||^2_obs + 1/2 ||(w - w_avg) / w_std||^2
- kappa sum_{i<j} cos(w_i, w_j)``, with ``params`` (default: the prior's card, as ``bp.reconstruct``).
The schedule and the noise on w stay the projector's in every row.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from brgm_pyro.baselines.noise_maps import random_noise, using_noise
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Operator
from brgm_pyro.inference.map import MAPSchedule, lr_factor
from brgm_pyro.models.brgm import BRGMParams, colinearity
from brgm_pyro.problem import frozen, prepare_problem
from brgm_pyro.stylegan2 import to_unit

__all__ = ["NOISE_WEIGHT", "SCHEDULE", "W_NOISE", "W_NOISE_RAMP", "noise_regularizer", "projector"]

SCHEDULE = MAPSchedule(steps=1000, lr=0.1, rampup=0.05, rampdown=0.25)
NOISE_WEIGHT = 1e5
W_NOISE = 0.05
W_NOISE_RAMP = 0.75
SMALLEST_SCALE = 8


def noise_regularizer(maps: list[torch.Tensor]) -> torch.Tensor:
    """The multi-scale autocorrelation penalty of noise maps (B, 1, R, R), summed over maps and scales: (B,)."""
    total = 0.0
    for noise in maps:
        while True:
            for dim in (-1, -2):
                total = total + (noise * torch.roll(noise, shifts=1, dims=dim)).mean((1, 2, 3)).square()
            if noise.shape[-1] <= SMALLEST_SCALE:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


def _normalise(maps: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for noise in maps:
            mean = noise.mean((1, 2, 3), keepdim=True)
            noise.sub_(mean).div_(noise.square().mean((1, 2, 3), keepdim=True).sqrt())


def projector(
    y: torch.Tensor,
    f: Operator,
    G: nn.Module | None = None,
    optimise_noise: bool = True,
    w_plus: bool = False,
    pixel: bool = False,
    prior: bool = False,
    colinear: bool = False,
    params: BRGMParams | str | None = None,
    perceptual: str | nn.Module | None = "auto",
    steps: int = SCHEDULE.steps,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """StyleGAN2's projection of y (B, C, h, w) in [0, 1] through f with G, or a step of Fig. 4 (module notes).

    Args:
        y, f, G: as for ``bp.reconstruct`` (G is required).
        optimise_noise, w_plus, pixel, prior, colinear: the steps of Fig. 4, the projector by default.
        params: sigma_pixel, sigma_percept and kappa of the BRGM terms (a preset name or
            ``BRGMParams``; default the prior's card), used once ``pixel``, ``prior`` or ``colinear`` is on.
        perceptual: phi; "auto" is the prior card's feature network, as in ``bp.reconstruct``.
        steps: optimisation steps (1000, the recipe's); the schedule's ramps scale with them.
        seed: seed of the noise maps and of the noise on w.
        progress: show a progress bar.

    Returns images (B, C, H, W) in [0, 1]: G of the final w with the final noise maps.
    """
    if G is None:
        raise InputError("projector searches the latent space of a generator; pass G, e.g. bp.load_generator(...).")
    given_on = y.device if isinstance(y, torch.Tensor) else None
    problem = prepare_problem(y, f, G, params, perceptual)
    if problem.perceptual is None:
        raise InputError(
            "The projector's loss is perceptual, and this generator's card names no feature network; "
            "pass perceptual='fmnist' or another registered name."
        )
    schedule = MAPSchedule(steps=steps, lr=SCHEDULE.lr, rampup=SCHEDULE.rampup, rampdown=SCHEDULE.rampdown)
    y, f, phi, target = problem.y, problem.forward, problem.perceptual, problem.y_features
    observed, model_params = problem.observed.expand_as(y), problem.params
    batch, device = y.shape[0], y.device
    brgm_terms = pixel or prior or colinear
    generator = torch.Generator().manual_seed(seed)
    w = G.w_avg.expand(batch, G.num_ws if w_plus else 1, G.w_dim).clone().requires_grad_(True)
    noise = [n.requires_grad_(True) for n in random_noise(G, batch, generator)] if optimise_noise else []
    optimizer = torch.optim.Adam([w, *noise], lr=schedule.lr, betas=schedule.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, schedule))
    w_spread = math.sqrt(G.w_dim) * float(G.w_std)
    with frozen(phi), frozen(G), using_noise(G, noise) if optimise_noise else contextlib.nullcontext():
        for step in tqdm(range(steps), disable=not progress, desc="projector", leave=False):
            ramp = max(0.0, 1.0 - step / steps / W_NOISE_RAMP) ** 2
            jitter = torch.randn(w.shape, generator=generator).to(device) * (w_spread * W_NOISE * ramp)
            w_in = (w + jitter).expand(batch, G.num_ws, G.w_dim)
            y_clean = f(to_unit(G.synthesis(w_in)))
            distance = (phi(y_clean) - target).square().sum(1)
            if not brgm_terms:
                loss = distance + (NOISE_WEIGHT * noise_regularizer(noise) if optimise_noise else 0.0)
            else:
                loss = 0.5 * distance / model_params.sigma_percept**2
                if pixel:
                    loss = loss + 0.5 * ((y_clean - y).square() * observed).flatten(1).sum(1) / model_params.sigma_pixel**2
                if prior:
                    loss = loss + 0.5 * ((w_in - G.w_avg) / G.w_std).square().flatten(1).sum(1)
                if colinear:
                    loss = loss - model_params.kappa * colinearity(w_in)
                if optimise_noise:
                    loss = loss + NOISE_WEIGHT * noise_regularizer(noise)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            scheduler.step()
            if optimise_noise:
                _normalise(noise)
        with torch.no_grad():
            image = to_unit(G.synthesis(w.expand(batch, G.num_ws, G.w_dim)), clamp=True)
    return image.to(given_on)

