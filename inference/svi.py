"""Variational inference for BRGM: ``pyro.infer.SVI`` with a Gaussian guide on w, started at the MAP.

The guide q(w) is fitted by maximising the ELBO, ``E_q[log p(w, y)] - E_q[log q(w)]``, estimated
by ``Trace_ELBO`` with ``num_particles`` draws per step. Its entropy term is what keeps q from
collapsing onto the MAP; the authors' released "VI" leaves it out, so theirs is no ELBO.

Guides (``SVISettings.guide``):

* ``"normal"``: ``AutoNormal``, a diagonal Gaussian per latent coordinate (mean field). For a
  Gaussian posterior it finds the exact mean and the conditional variances ``1 / P_ii`` of the
  posterior precision P, which understate the marginal variances where the coordinates correlate.
* ``"lowrank"``: ``AutoLowRankMultivariateNormal``, covariance ``W W^T + diag(d^2)`` with W of
  ``rank`` columns, which can carry the correlations that the data induce between coordinates.

Both start at the MAP (the ``init_values``, in the model's constrained space) with a small
scale ``init_scale`` in the unconstrained space. Latents with a constrained support (a latent
``sigma_pixel``) are handled by the guides' transforms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoGuide, AutoLowRankMultivariateNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.optim import ClippedAdam
from tqdm.auto import tqdm

__all__ = ["GUIDES", "SVISettings", "draw_latents", "make_guide", "run_svi"]

GUIDES = ("normal", "lowrank")


@dataclass(frozen=True)
class SVISettings:
    """Settings of the variational fit.

    Attributes:
        guide: "normal" (AutoNormal) or "lowrank" (AutoLowRankMultivariateNormal).
        rank: rank of the low-rank covariance (None: Pyro's default, the square root of the
            number of latent coordinates).
        steps: SVI steps.
        lr: initial Adam learning rate; it decays geometrically to ``lr * final_lr_ratio``.
        final_lr_ratio: learning rate at the last step relative to ``lr``.
        num_particles: draws of q per ELBO estimate (more: less gradient noise, slower steps).
        init_scale: initial standard deviation of q in the unconstrained space.
    """

    guide: str = "normal"
    rank: int | None = 16
    steps: int = 300
    lr: float = 0.05
    final_lr_ratio: float = 0.1
    num_particles: int = 1
    init_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.guide not in GUIDES:
            raise ValueError(f"Unknown SVI guide {self.guide!r}; choose one of: {', '.join(GUIDES)}.")
        if self.rank is not None and not (isinstance(self.rank, int) and self.rank >= 1):
            raise ValueError(f"rank must be a positive integer or None, got {self.rank!r}.")
        for name in ("steps", "num_particles"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("lr", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}.")
        if not 0 < self.final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio must lie in (0, 1], got {self.final_lr_ratio!r}.")


def make_guide(model: Callable, settings: SVISettings, init_values: dict[str, torch.Tensor]) -> AutoGuide:
    """The guide of ``settings.guide`` for ``model``, centred at ``init_values`` (other sites: prior median)."""
    init_loc_fn = init_to_value(values=init_values, fallback=init_to_median)
    if settings.guide == "normal":
        return AutoNormal(model, init_loc_fn=init_loc_fn, init_scale=float(settings.init_scale))
    return AutoLowRankMultivariateNormal(
        model, init_loc_fn=init_loc_fn, init_scale=float(settings.init_scale), rank=settings.rank
    )


def run_svi(
    model: Callable,
    model_kwargs: dict,
    init_values: dict[str, torch.Tensor],
    settings: SVISettings,
    progress: bool = True,
) -> tuple[AutoGuide, torch.Tensor]:
    """Fit the guide of ``settings`` to ``model(**model_kwargs)``; returns the guide and the loss
    trace, -ELBO (nats, summed over the images of the batch) per step, shape (steps,)."""
    pyro.clear_param_store()
    guide = make_guide(model, settings, init_values)
    decay = settings.final_lr_ratio ** (1.0 / settings.steps)
    optim = ClippedAdam({"lr": settings.lr, "lrd": decay})
    svi = SVI(model, guide, optim, loss=Trace_ELBO(num_particles=settings.num_particles))
    losses = []
    bar = tqdm(range(settings.steps), disable=not progress, desc=f"SVI ({settings.guide})", leave=False)
    for _ in bar:
        loss = svi.step(**model_kwargs)
        losses.append(loss)
        if progress:
            bar.set_postfix(elbo=f"{-loss:.4g}", refresh=False)
    return guide, torch.tensor(losses)


@torch.no_grad()
def draw_latents(guide: AutoGuide, model_kwargs: dict, num_samples: int) -> dict[str, torch.Tensor]:
    """``num_samples`` independent draws of every latent site from the fitted guide: name -> (S, ...)."""
    draws = [guide(**model_kwargs) for _ in range(num_samples)]
    return {name: torch.stack([draw[name] for draw in draws]) for name in draws[0]}
