"""The posterior over every mode the search found: a local posterior at each, weighted by its evidence.

For one image with modes theta_1 .. theta_K of the potential U(theta) = -log p(theta, y) in the
unconstrained space of the model's latents (``laplace.initialize_at``: w or z as they are, a log for a
latent sigma_pixel, with the change of variables' Jacobian in U), the posterior is approximated by

    p(theta | y)  ~  sum_k pi_k Normal(theta; theta_k, H_k^-1),     pi_k = Z_k / sum_j Z_j,
    log Z_k       =  -U(theta_k) + d/2 log(2 pi) - 1/2 log det H_k        (Laplace's evidence of mode k)

with H_k the Hessian of U at theta_k (``laplace.dense_hessian``). Assumptions, each a reason the
weights are estimates: each mode is a local maximum and p(theta | y) near it is Gaussian (exact for a
linear G); the modes do not overlap (two starts that converged to the same mode are merged: their
images within ``SAME_MODE`` RMS, the one of higher density kept); modes the search did not find have
no weight. The Hessian's eigenvalues are floored at ``EIGEN_FLOOR`` times their median, as the
Laplace whitening does (``inference/laplace.py``: a non-positive eigenvalue of a non-convex U has no
Gaussian), and the same floored eigenvalues give both log det H_k and the draws, so each component
is a proper Gaussian and its normaliser is the one that enters the weight.

A draw of the mixture picks mode k with probability pi_k, then theta = theta_k + A_k u, u ~ N(0, I),
A_k = V |Lambda|^-1/2 (``LaplaceWhitening``). The number of draws of each mode is fixed by systematic
resampling of the weights, so S draws give each mode S pi_k of them, rounded.

**A fitted local posterior** (``fit_mode_svi``, the mixture of ``method="svi"``). Where G is far from
linear over the posterior's spread, the Laplace Gaussian reaches where the posterior does not (on
G's own prior, its draws lie hundreds of nats below the mode where a Gaussian's lie d/2 below).
Each component is then a Gaussian q_k fitted to the posterior by SVI from the mode (the guides of
``inference.svi``), and its mass is estimated by importance sampling with q_k as the proposal,

    Z_k ~ 1/M sum_m p(theta_m, y) / q_k(theta_m),   theta_m ~ q_k          (``pyro.infer.Importance``)

an unbiased estimate of the mode's evidence (its logarithm is biased low by the variance of the
weights; ``EVIDENCE_DRAWS`` draws). It assumes that q_k covers its mode's posterior and that the
modes do not overlap; draws are then those of the q_k.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import Importance
from pyro.poutine.util import site_is_subsample

from brgm_pyro.inference.laplace import EIGEN_FLOOR, LaplaceWhitening, block_hessians, initialize_at
from brgm_pyro.inference.params import local_params
from brgm_pyro.inference.svi import SVISettings, WhitenedGuide, choose_guide, draw_latents, run_svi

__all__ = ["EVIDENCE_DRAWS", "SAME_MODE", "FittedMode", "LaplaceMode", "allocate", "fit_mode", "fit_mode_svi",
           "fit_modes", "merge_duplicates"]

EVIDENCE_DRAWS = 64
"""Draws of a fitted component whose importance weights estimate its evidence."""

SAME_MODE = 0.01
"""Two modes whose images G(w) lie within this RMS distance (pixels in [0, 1]) are one mode."""


@dataclass
class LaplaceMode:
    """The Laplace approximation at one mode of one image.

    Attributes:
        whitening: theta = theta_k + A u (``LaplaceWhitening``: ``z0``, ``A``, the floored eigenvalues).
        transforms: site -> the transform from the unconstrained theta to the model's latents.
        log_joint: -U(theta_k).
        log_evidence: log Z_k (module notes).
    """

    whitening: LaplaceWhitening
    transforms: dict
    log_joint: float
    log_evidence: float

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``count`` draws of the Gaussian, as the model's latents: site -> (count, *shape)."""
        z0 = self.whitening.z0
        u = torch.randn(count, z0.numel(), generator=generator, dtype=z0.dtype).to(z0.device)
        unconstrained = self.whitening.latents(u)
        with torch.no_grad():
            return {name: self.transforms[name].inv(value) for name, value in unconstrained.items()}


def fit_mode(model: Callable, model_kwargs: dict, latents: dict[str, torch.Tensor]) -> LaplaceMode:
    """The Laplace approximation of ``model(**model_kwargs)`` (one image) at its mode ``latents``."""
    params, potential_fn, transforms = initialize_at(model, model_kwargs, latents)
    whitening = LaplaceWhitening(potential_fn, params, EIGEN_FLOOR, option="the mixture posterior",
                                 fallback="use method='svi' with guide='normal'")
    with torch.no_grad():
        log_joint = -float(potential_fn({name: value.detach() for name, value in params.items()}))
    floor = EIGEN_FLOOR * whitening.eigenvalues.abs().median()
    log_det = float(whitening.eigenvalues.abs().clamp_min(floor).double().log().sum())
    dimension = whitening.z0.numel()
    log_evidence = log_joint + dimension / 2 * math.log(2 * math.pi) - log_det / 2
    return LaplaceMode(whitening, transforms, log_joint, log_evidence)


@dataclass
class FittedMode:
    """A Gaussian fitted by SVI at one mode of one image, and its evidence by importance sampling."""

    guide: Any
    model_kwargs: dict
    log_evidence: float
    effective_sample_size: float
    settings: SVISettings
    loss_trace: torch.Tensor

    def draw(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``count`` draws of the fitted guide, as the model's latents: site -> (count, *shape)."""
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=generator)))
            return draw_latents(self.guide, self.model_kwargs, count)


def fit_mode_svi(model: Callable, model_kwargs: dict, latents: dict[str, torch.Tensor], settings: SVISettings,
                 seed: int) -> FittedMode:
    """SVI's Gaussian at the mode ``latents`` of ``model(**model_kwargs)`` (one image) and its importance-sampled
    evidence (module notes). The "laplace" guide fits in the whitened u = A^-1 (theta - theta_k), whose
    density is |det A| times theta's: its evidence in u is corrected by log |det A|."""
    pyro.set_rng_seed(seed)
    settings = choose_guide(model, model_kwargs, latents, settings)
    guide, loss_trace = run_svi(model, model_kwargs, latents, settings, progress=False)
    fitted_model, fitted_guide, log_det_a = model, guide, 0.0
    if isinstance(guide, WhitenedGuide):
        fitted_model, fitted_guide = guide.model, guide.guide
        log_det_a = float(torch.linalg.slogdet(guide.whitening.A.double())[1])
    with local_params(), torch.no_grad():
        importance = Importance(fitted_model, fitted_guide, num_samples=EVIDENCE_DRAWS).run(**model_kwargs)
        log_evidence = float(importance.get_log_normalizer()) + log_det_a
        ess = float(importance.get_ESS())
    return FittedMode(guide, model_kwargs, log_evidence, ess, settings, loss_trace)


def fit_modes(model: Callable, model_kwargs: dict, latents: dict[str, torch.Tensor]) -> list[LaplaceMode]:
    """The Laplace approximations at N modes at once: ``model_kwargs`` of a batch of N images (the same
    image repeated for its K modes, ``Problem.tile``), ``latents`` site -> (N, ...) the modes. One set of
    Hessian-vector products gives every mode's Hessian (``laplace.block_hessians``)."""
    count = next(iter(latents.values())).shape[0]
    params, potential_fn, transforms = initialize_at(model, model_kwargs, latents)
    hessians = block_hessians(potential_fn, params, count)
    with torch.no_grad():
        potentials = _block_potentials(model, model_kwargs, params, transforms)
    modes = []
    for k in range(count):
        block = {name: value[k : k + 1].detach() for name, value in params.items()}
        whitening = LaplaceWhitening(potential_fn, block, EIGEN_FLOOR, option="the mixture posterior",
                                     fallback="use method='svi' with guide='normal'", hessian=hessians[k])
        floor = EIGEN_FLOOR * whitening.eigenvalues.abs().median()
        log_det = float(whitening.eigenvalues.abs().clamp_min(floor).double().log().sum())
        log_joint = -float(potentials[k])
        log_evidence = log_joint + hessians.shape[1] / 2 * math.log(2 * math.pi) - log_det / 2
        modes.append(LaplaceMode(whitening, transforms, log_joint, log_evidence))
    return modes


def _block_potentials(model: Callable, model_kwargs: dict, params: dict[str, torch.Tensor], transforms: dict
                      ) -> torch.Tensor:
    """U_k for each image of the plate, (N,): -log p(theta_k, y_k) - log |d theta / d u| at the unconstrained
    ``params`` (site -> (N, ...)), the per-image terms of the potential that ``initialize_model`` sums."""
    # initialize_model's transforms map a site's support to the unconstrained space: .inv maps back
    constrained = {name: transforms[name].inv(value) for name, value in params.items()}
    trace = poutine.trace(poutine.condition(model, data=constrained)).get_trace(**model_kwargs)
    trace.compute_log_prob(site_filter=lambda name, site: not site_is_subsample(site)
                           and not site["infer"].get("_deterministic"))
    count = next(iter(params.values())).shape[0]
    total = torch.zeros(count)
    for site in trace.nodes.values():
        if "log_prob" in site:
            value = site["log_prob"]
            total = total + (value.reshape(count, -1).sum(1) if value.dim() else value / count)
    for name, value in params.items():
        jacobian = transforms[name].inv.log_abs_det_jacobian(value, constrained[name])
        total = total + jacobian.reshape(count, -1).sum(1)
    return -total


def merge_duplicates(images: torch.Tensor, log_joint: torch.Tensor) -> list[int]:
    """The modes to keep, (K, C, H, W) images of one image's modes: of each group within ``SAME_MODE`` RMS
    of each other, the one of highest ``log_joint``; in order of decreasing density."""
    kept: list[int] = []
    for k in log_joint.argsort(descending=True).tolist():
        if all((images[k] - images[j]).square().mean().sqrt() >= SAME_MODE for j in kept):
            kept.append(k)
    return kept


def allocate(weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Draws per mode for ``count`` draws of a mixture with ``weights`` (K,): systematic resampling,
    so mode k gets floor or ceil of count * weight_k."""
    cumulative = torch.cumsum(weights.double() / weights.sum(), 0)
    offset = torch.rand((), generator=generator, dtype=torch.float64)
    positions = (torch.arange(count, dtype=torch.float64) + offset) / count
    chosen = torch.searchsorted(cumulative, positions).clamp(max=len(weights) - 1)
    return torch.bincount(chosen, minlength=len(weights))
