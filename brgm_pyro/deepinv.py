"""BRGM in deepinv's loops: ``BRGM(G)``, a ``deepinv.models.Reconstructor`` that is also a sampler.

    import deepinv as dinv
    from brgm_pyro.deepinv import BRGM

    model = BRGM(bp.load_generator("fashion-mnist-32"))   # x_hat = model(y, physics): the MAP, as bp.reconstruct
    mean, var = model.sample(y, physics)                 # the posterior's mean and variance, as deepinv's samplers
    dinv.test(model, dataloader, physics, online_measurements=True)

``physics`` is any deepinv physics whose A maps G's images to y: a ``LinearPhysics`` carries its
structure into the posterior (``brgm_pyro.forward.deepinv_physics``); the std of its
``GaussianNoise`` is sigma_pixel unless ``params`` are given. A model of ``BRGM(G, estimate="mean")``
returns the posterior mean instead of the MAP. deepinv's test loop runs models without gradients;
BRGM's MAP and SVI need them, and turn them on for their own optimisation.

deepinv is an optional dependency (``pip install 'brgm-pyro[deepinv]'``); ``import brgm_pyro`` never
imports it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

try:
    from deepinv.models import Reconstructor
except ImportError:
    raise ImportError("brgm_pyro.deepinv needs deepinv: install it with pip install 'brgm-pyro[deepinv]'.") from None

from brgm_pyro.errors import InputError
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.posterior import Posterior
from brgm_pyro.reconstruct import ReconstructionResult, reconstruct
from brgm_pyro.sampling import METHODS, sample_posterior

__all__ = ["BRGM", "ESTIMATES"]

ESTIMATES = ("map", "mean")


class BRGM(Reconstructor):
    """BRGM with the prior G as a deepinv reconstructor (``forward(y, physics) -> x``) and sampler
    (``sample(y, physics) -> (mean, var)``).

    Every call runs ``bp.reconstruct`` or ``bp.sample_posterior`` on (y, physics) with this model's
    settings; images come back on y's device and dtype, (B, C, H, W) in [0, 1].

    Args:
        G: the generator (``bp.load_generator``); its device is where BRGM runs.
        estimate: what ``forward`` returns: "map" (``bp.reconstruct``) or "mean" (the posterior mean
            of ``bp.sample_posterior``).
        params, perceptual: as for ``bp.reconstruct`` (None: the prior card's, with sigma_pixel the
            physics' Gaussian noise level where it has one).
        schedule: the MAP's Adam schedule (None: the prior card's).
        method, num_samples: the posterior's inference ("laplace", the default mixture at the modes the
            search finds, "svi", "nuts", "hmc") and its draws.
        seed: the seed of every call that is given none.
        progress: show progress bars.
        options: further keyword arguments of ``bp.sample_posterior`` (e.g. ``model``, ``settings``,
            ``steps`` of SVI).
    """

    def __init__(
        self,
        G: nn.Module,
        estimate: str = "map",
        *,
        params: BRGMParams | str | None = None,
        perceptual: str | nn.Module | None = "auto",
        schedule: MAPSchedule | None = None,
        method: str = "laplace",
        num_samples: int = 16,
        seed: int = 0,
        progress: bool = False,
        **options: Any,
    ):
        super().__init__()
        if estimate not in ESTIMATES:
            raise InputError(f"Unknown estimate {estimate!r}; choose 'map' (the MAP) or 'mean' (the posterior mean).")
        if method not in METHODS:
            raise InputError(f"Unknown posterior method {method!r}; choose one of: {', '.join(METHODS)}.")
        self.generator = G
        self.estimate = estimate
        self.params, self.perceptual, self.schedule = params, perceptual, schedule
        self.method, self.num_samples, self.seed, self.progress = method, num_samples, seed, progress
        self.options = options

    def extra_repr(self) -> str:
        return f"estimate={self.estimate!r}, method={self.method!r}, num_samples={self.num_samples}"

    def forward(self, y: torch.Tensor, physics: nn.Module, seed: int | None = None) -> torch.Tensor:
        """The MAP (``estimate="map"``) or the posterior mean (``"mean"``) of the images behind y."""
        if self.estimate == "map":
            image = self.reconstruct(y, physics, seed).image
        else:
            image = self.posterior(y, physics, seed).mean
        return image.to(device=y.device, dtype=y.dtype)

    def sample(self, y: torch.Tensor, physics: nn.Module, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior mean and variance per pixel, (B, C, H, W) each, as ``deepinv.sampling``'s
        ``sampler.sample(y, physics)`` returns them."""
        post = self.posterior(y, physics, seed)
        return post.mean.to(device=y.device, dtype=y.dtype), post.std.square().to(device=y.device, dtype=y.dtype)

    def reconstruct(self, y: torch.Tensor, physics: nn.Module, seed: int | None = None) -> ReconstructionResult:
        """``bp.reconstruct`` of y under physics with this model's settings: the MAP and its diagnostics."""
        with torch.enable_grad():
            return reconstruct(y, physics, self.generator, self.params, self.perceptual, schedule=self.schedule,
                               seed=self.seed if seed is None else seed, progress=self.progress)

    def posterior(self, y: torch.Tensor, physics: nn.Module, seed: int | None = None) -> Posterior:
        """``bp.sample_posterior`` of y under physics with this model's settings: draws, mean, std,
        calibrated intervals (``post.interval``)."""
        with torch.enable_grad():
            return sample_posterior(y, physics, self.generator, self.method, self.num_samples, params=self.params,
                                    perceptual=self.perceptual, map_schedule=self.schedule,
                                    seed=self.seed if seed is None else seed, progress=self.progress, **self.options)
