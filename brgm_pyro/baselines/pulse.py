"""The "pulse" baseline: PULSE (Menon et al., CVPR 2020) on our generator, through the corruption f.

PULSE searches for an image G(w) whose corruption matches y while keeping its latents where the
generator's inputs concentrate: on spheres. Written from the paper and its released code
(github.com/adamian98/pulse, ``PULSE.py``, ``loss.py``, ``SphericalOptimizer.py``, ``run.py``):

* Latents: one z_l in R^D per w vector (``tile_latent`` off), z_l ~ N(0, I) at the start, mapped to
  w_l = lrelu_0.2(z_l * s + m), where m and s are the per-coordinate mean and standard deviation of
  lrelu_5(w) over 10^6 mapping samples (seed 0): the mapping network's last leaky ReLU undone, so
  that the fitted Gaussian describes its pre-activations (lrelu_0.2 inverts lrelu_5 exactly).
* Noise: the coarsest ``trainable_noise`` (5) noise maps are optimised, from N(0, 1); the last
  (finest) map is zero (PULSE's ``bad_noise_layers``); the others are fixed N(0, 1) draws. At 32 px
  G has 7 noise layers (4, 8, 8, 16, 16, 32, 32), so 5 are optimised, one fixed, one zero; StyleGAN
  at 1024 px has 18, of which PULSE optimises the same 5 coarsest.
* Loss: ``100 sum_b max(MSE_b, eps) + 0.05 GEOCROSS``, MSE_b the mean squared error between f(G(w))
  and y over image b's observed pixels (PULSE: its bicubic downscaling), eps = 2e-3; GEOCROSS
  ``= sum_b D / 8 mean_{i,j} d(w_i, w_j)^2`` with the geodesic distance d(a, b) = 2 atan2(|a - b|,
  |a + b|), over all pairs of the L vectors w (after the mapping above).
* Optimiser: projected Adam, 100 steps, learning rate 0.4 with PULSE's ``linear1cycledrop``
  schedule (a triangle from 0.1 lr up to lr and back over the first 90% of the steps, then down to
  lr / 1000); after every step each z_l and each optimised noise map is rescaled to its initial norm.
* The check: PULSE's code returns an image only when some step reached MSE <= eps, and prints
  "Could not find a face that downscales correctly within epsilon" otherwise. Here the image of the
  last step is always returned, as theirs is when the check passes, and the check is reported per
  image in ``details`` (``min_mse``, ``passed``, ``eps``) instead of dropping the image.

PULSE is a super-resolution method: f must be a Downsample, optionally after a Blur.
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from brgm_pyro.baselines.common import operator_chain
from brgm_pyro.baselines.noise_maps import noise_layers, using_noise
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Blur, Downsample, Operator
from brgm_pyro.problem import frozen, prepare_problem
from brgm_pyro.stylegan2 import to_unit

__all__ = ["EPS", "GEOCROSS_WEIGHT", "L2_WEIGHT", "LR", "STEPS", "TRAINABLE_NOISE", "gaussian_fit", "geocross", "pulse"]

STEPS = 100
LR = 0.4
EPS = 2e-3
L2_WEIGHT = 100.0
GEOCROSS_WEIGHT = 0.05
TRAINABLE_NOISE = 5
FIT_SAMPLES = 1_000_000

_FITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def gaussian_fit(G: nn.Module, samples: int = FIT_SAMPLES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, s): per-coordinate mean and standard deviation of lrelu_5(w) over ``samples`` mapping draws;
    cached per generator and setting."""
    cached = _FITS.setdefault(G, {})
    if (samples, seed) not in cached:
        generator = torch.Generator().manual_seed(seed)
        total = torch.zeros(G.w_dim, dtype=torch.float64)
        squares = torch.zeros(G.w_dim, dtype=torch.float64)
        for start in range(0, samples, 100_000):
            z = torch.randn(min(100_000, samples - start), G.z_dim, generator=generator).to(G.w_avg.device)
            v = F.leaky_relu(G.mapping(z)[:, 0], 5.0).double().cpu()
            total += v.sum(0)
            squares += v.square().sum(0)
        mean = total / samples
        std = ((squares - samples * mean.square()) / (samples - 1)).clamp_min(0).sqrt()
        cached[(samples, seed)] = (mean.float(), std.float())
    mean, std = cached[(samples, seed)]
    return mean.to(G.w_avg.device), std.to(G.w_avg.device)


def _linear1cycledrop(step: int, steps: int) -> float:
    """PULSE's learning-rate factor: 0.1 -> 1 -> 0.1 linearly over 90% of the steps, then to 0.001."""
    if step < 0.9 * steps:
        return (9 * (1 - abs(step / (0.9 * steps) - 0.5) * 2) + 1) / 10
    return 0.1 + (step - 0.9 * steps) / (0.1 * steps) * (1 / 1000 - 0.1)


def _norms(tensor: torch.Tensor) -> torch.Tensor:
    """Norm over all but the first two dims (per image and w vector, or per image and noise map)."""
    return (tensor.square().sum(tuple(range(2, tensor.dim())), keepdim=True) + 1e-9).sqrt()


def geocross(w: torch.Tensor) -> torch.Tensor:
    """PULSE's GEOCROSS per image, (B,): D / 8 times the mean over pairs (i, j) of the squared geodesic
    distance 2 atan2(|w_i - w_j|, |w_i + w_j|) between the L vectors of w (B, L, D)."""
    a, b = w[:, None], w[:, :, None]
    distance = 2 * torch.atan2(((a - b).square().sum(-1) + 1e-9).sqrt(), ((a + b).square().sum(-1) + 1e-9).sqrt())
    return (distance.square() * w.shape[-1]).mean((1, 2)) / 8.0


def _check_super_resolution(f: Operator) -> None:
    chain = operator_chain(f)
    if not isinstance(chain[-1], Downsample) or not all(isinstance(op, Blur) for op in chain[:-1]):
        raise InputError(
            f"pulse is a super-resolution method and needs f to be a Downsample (optionally after a Blur), "
            f"got {type(f).__name__}; use projector or brgm for a Mask."
        )


def pulse(
    y: torch.Tensor,
    f: Operator,
    G: nn.Module | None = None,
    steps: int = STEPS,
    lr: float = LR,
    eps: float = EPS,
    trainable_noise: int = TRAINABLE_NOISE,
    fit_samples: int = FIT_SAMPLES,
    seed: int = 0,
    details: dict | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """PULSE's reconstruction of y (B, C, h, w) in [0, 1] under the super-resolution operator f with G.

    Args:
        y, f, G: as for ``bp.reconstruct`` (G is required).
        steps, lr, eps, trainable_noise: PULSE's published settings by default (module notes).
        fit_samples: mapping draws for the Gaussian fit of the latents.
        seed: seed of the starting latents and noise maps.
        details: if a dict, filled with the consistency check per image: "min_mse" (B,), the lowest
            MSE between f(G(w)) and y over the steps, "passed" (B,) whether it reached eps, "eps".
        progress: show a progress bar.

    Returns images (B, C, H, W) in [0, 1]: G of the last step's latents, whether or not the check passed.
    """
    if G is None:
        raise InputError("pulse searches the latent space of a generator; pass G, e.g. bp.load_generator(...).")
    given_on = y.device if isinstance(y, torch.Tensor) else None
    problem = prepare_problem(y, f, G, perceptual=None)
    _check_super_resolution(f)
    y, f, observed = problem.y, problem.forward, problem.observed.expand_as(problem.y)
    batch, device = y.shape[0], y.device
    mean, std = gaussian_fit(G, fit_samples)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.num_ws, G.w_dim, generator=generator).to(device).requires_grad_(True)
    noise, trained = [], []
    layers = noise_layers(G)
    for index, layer in enumerate(layers):
        shape = (batch, 1, layer.resolution, layer.resolution)
        if index == len(layers) - 1:
            noise.append(torch.zeros(shape, device=device))
            continue
        noise.append(torch.randn(shape, generator=generator).to(device))
        if index < trainable_noise:
            trained.append(noise[-1].requires_grad_(True))
    variables = [z, *trained]
    radii = [_norms(v).detach() for v in variables]
    optimizer = torch.optim.Adam(variables, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _linear1cycledrop(step, steps))
    min_mse = torch.full((batch,), math.inf, device=device)
    with frozen(G), using_noise(G, noise):
        for _ in tqdm(range(steps), disable=not progress, desc="PULSE", leave=False):
            w = F.leaky_relu(z * std + mean, 0.2)
            image = to_unit(G.synthesis(w))
            squared = (f(image) - y).square() * observed
            mse = squared.flatten(1).sum(1) / observed.flatten(1).sum(1)
            min_mse = torch.minimum(min_mse, mse.detach())
            loss = L2_WEIGHT * mse.clamp(min=eps).sum() + GEOCROSS_WEIGHT * geocross(w).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                for variable, radius in zip(variables, radii):
                    variable.mul_(radius / _norms(variable))
    if details is not None:
        details.update(min_mse=min_mse.cpu(), passed=(min_mse <= eps).cpu(), eps=eps)
    return image.detach().clamp(0, 1).to(given_on)
