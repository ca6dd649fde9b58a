"""The diffusion samplers a user would pick instead of BRGM: DPS and DiffPIR, deepinv's own implementations.

Both draw from an approximate posterior p(x | y) by running a diffusion model's reverse process
with the data y steering it; the prior is the diffusion denoiser trained on the same Fashion-MNIST
split as BRGM's generator (:mod:`~brgm_pyro.baselines.denoiser`), and f reaches deepinv as a
LinearPhysics (:func:`~brgm_pyro.baselines.deepinv_physics.as_physics`).

=======  ======================================================================================
dps      ``deepinv.sampling.DPS`` (Chung et al. 2023): the variance-preserving SDE solved by the
         DDPM ancestral sampler in ``steps`` steps, each step's score corrected by
         -weight grad_x ||y - f(D(x_t, sigma_t))|| (the gradient goes through the denoiser)
diffpir  ``deepinv.sampling.DiffPIR`` (Zhu et al. 2023): ``steps`` steps of denoising, a proximal
         step on ||f(x) - y||^2 / 2 weighted by sigma_t^2 / (2 lambda sigma^2) (conjugate gradients
         through f and its adjoint), and re-noising with a fraction ``zeta`` of fresh noise
=======  ======================================================================================

:func:`prior_samples` runs the same reverse process with no data: draws from the denoiser's own prior,
to see what it has learnt.

Each method returns one draw per image (``draws=1``), or the mean of ``draws`` draws, which estimates
the posterior mean; :func:`posterior_draws` returns the draws themselves (draws, B, C, H, W), from
which the per-pixel spread and credible intervals are formed. Draw k runs with seed ``seed + k``.
The default options were chosen on Fashion-MNIST validation images (docs/results/diffusion.md).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import nn

from brgm_pyro.baselines.common import check_observation, clean_shape
from brgm_pyro.baselines.deepinv_physics import as_physics, require_deepinv
from brgm_pyro.baselines.denoiser import load_denoiser
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Operator
from brgm_pyro.io import PathLike

__all__ = ["SAMPLERS", "diffpir", "dps", "posterior_draws", "prior_samples"]

IMAGE_SIZE = 32


def _positive(name: str, value: float, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not math.isfinite(value):
        expected = "a positive whole number" if integer else "a positive number"
        raise InputError(f"{name} must be {expected}, got {value!r}.")


def _dps_draw(denoiser: nn.Module, physics, y: torch.Tensor, shape: torch.Size, seed: int, steps: int = 100,
              weight: float = 300.0) -> torch.Tensor:
    deepinv = require_deepinv()
    _positive("steps", steps, integer=True)
    _positive("weight", weight)
    sampler = deepinv.sampling.DPS(denoiser, num_steps=steps, weight=weight, device=y.device,
                                   rng=torch.Generator(y.device))
    return sampler(y, physics, x_init=tuple(shape), seed=seed)


def _diffpir_draw(denoiser: nn.Module, physics, y: torch.Tensor, shape: torch.Size, seed: int, steps: int = 100,
                  sigma: float = 0.005, lambda_: float = 7.0, zeta: float = 0.8) -> torch.Tensor:
    deepinv = require_deepinv()
    _positive("steps", steps, integer=True)
    _positive("sigma", sigma)
    _positive("lambda_", lambda_)
    if isinstance(zeta, bool) or not isinstance(zeta, (int, float)) or not 0 <= zeta <= 1:
        raise InputError(f"zeta, the fraction of fresh noise per step, must lie in [0, 1], got {zeta!r}.")
    if steps < 2:
        raise InputError(f"DiffPIR needs at least 2 steps, got {steps}.")
    sampler = deepinv.sampling.DiffPIR(denoiser, deepinv.optim.L2(), sigma=sigma, max_iter=steps, zeta=zeta,
                                       lambda_=lambda_, device=y.device)
    # DiffPIR draws from torch's global generator (and ignores seed 0): seed it here, and leave the
    # caller's generator as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sampler(y, physics)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"dps": _dps_draw, "diffpir": _diffpir_draw}


def posterior_draws(
    y: torch.Tensor, f: Operator, G: nn.Module | None = None, sampler: str = "dps", draws: int = 1, seed: int = 0,
    weights: PathLike | None = None, **options: float,
) -> torch.Tensor:
    """``draws`` posterior draws per image of ``sampler`` ("dps" or "diffpir"): (draws, B, C, H, W) in [0, 1].

    Args:
        y, f, G: as for ``bp.reconstruct``; G only fixes the image size (32x32 grayscale).
        sampler: "dps" (options ``steps``, ``weight``) or "diffpir" (``steps``, ``sigma``, ``lambda_``, ``zeta``).
        draws: draws per image; draw k is seeded ``seed + k``.
        seed: the seed of the first draw.
        weights: a denoiser file of ``scripts/train_diffusion.py`` instead of the shipped one.
    """
    check_observation(y, f)
    if sampler not in SAMPLERS:
        raise InputError(f"Unknown diffusion sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    _positive("draws", draws, integer=True)
    run = SAMPLERS[sampler]
    known = [name for name in inspect.signature(run).parameters if name not in ("denoiser", "physics", "y", "shape", "seed")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"{sampler} has no option {unknown[0]!r}; its options are {', '.join(known)}.")
    shape = clean_shape(y, f, G)
    if tuple(shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise InputError(
            f"The diffusion denoiser is trained on {IMAGE_SIZE}x{IMAGE_SIZE} grayscale Fashion-MNIST images, but these "
            f"images are {shape[1]}x{shape[2]}x{shape[3]}; use a method that takes any size, such as tv."
        )
    require_deepinv()
    denoiser = load_denoiser(weights).to(y.device)
    physics = as_physics(f, shape)
    samples = [run(denoiser, physics, y, shape, seed + k, **options).to(y.dtype).clamp(0, 1) for k in range(draws)]
    return torch.stack(samples)


def _mean_of_draws(sampler: str, y: torch.Tensor, f: Operator, G: nn.Module | None, draws: int, seed: int,
                   weights: PathLike | None, details: dict | None, options: dict) -> torch.Tensor:
    samples = posterior_draws(y, f, G, sampler, draws, seed, weights, **options)
    if details is not None and draws > 1:
        details.update(draws=draws, mean_std=samples.std(0).flatten(1).mean(1))
    return samples.mean(0)


def dps(y: torch.Tensor, f: Operator, G: nn.Module | None = None, draws: int = 1, seed: int = 0,
        weights: PathLike | None = None, details: dict | None = None, **options: float) -> torch.Tensor:
    """One DPS draw per image, or the mean of ``draws`` draws: images (B, C, H, W) in [0, 1].

    Options ``steps`` and ``weight`` (module notes), the rest as for :func:`posterior_draws`; ``details`` (a
    dict) gets, with several draws, the mean per-pixel std of each image's draws.
    """
    return _mean_of_draws("dps", y, f, G, draws, seed, weights, details, options)


def diffpir(y: torch.Tensor, f: Operator, G: nn.Module | None = None, draws: int = 1, seed: int = 0,
            weights: PathLike | None = None, details: dict | None = None, **options: float) -> torch.Tensor:
    """One DiffPIR draw per image, or the mean of ``draws`` draws: images (B, C, H, W) in [0, 1].

    Options ``steps``, ``sigma``, ``lambda_`` and ``zeta`` (module notes), the rest as for
    :func:`posterior_draws`; ``details`` (a dict) gets, with several draws, the mean per-pixel std of each
    image's draws.
    """
    return _mean_of_draws("diffpir", y, f, G, draws, seed, weights, details, options)


def prior_samples(count: int, steps: int = 250, seed: int = 0, weights: PathLike | None = None) -> torch.Tensor:
    """``count`` draws from the denoiser's prior: (count, 1, 32, 32) in [0, 1].

    deepinv's reverse diffusion with no data (``deepinv.sampling.PosteriorDiffusion`` without a data
    term): the variance-preserving SDE of DPS, solved by the DDPM ancestral sampler in ``steps`` steps.
    """
    _positive("count", count, integer=True)
    _positive("steps", steps, integer=True)
    deepinv = require_deepinv()
    denoiser = load_denoiser(weights)
    solver = deepinv.sampling.DDPMSolver(timesteps=torch.linspace(1, 0, steps, dtype=torch.float64),
                                         rng=torch.Generator())
    sampler = deepinv.sampling.PosteriorDiffusion(denoiser=denoiser, sde=deepinv.sampling.VariancePreservingDiffusion(),
                                                  solver=solver)
    with torch.no_grad():
        return sampler(None, None, x_init=(count, 1, IMAGE_SIZE, IMAGE_SIZE), seed=seed).float().clamp(0, 1)
