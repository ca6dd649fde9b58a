"""Variational inference for BRGM: a Gaussian guide on w fitted to the ELBO (``Trace_ELBO``), started at the MAP.

The guide q(w) is fitted by maximising the ELBO, ``E_q[log p(w, y)] - E_q[log q(w)]``, estimated
by ``Trace_ELBO`` with ``num_particles`` draws per step. Its entropy term is what keeps q from
collapsing onto the MAP; the authors' released "VI" leaves it out, so theirs is no ELBO.

Guides (``SVISettings.guide``):

* ``"normal"``: ``AutoNormal``, a diagonal Gaussian per latent coordinate (mean field). For a
  Gaussian posterior it finds the exact mean and the conditional variances ``1 / P_ii`` of the
  posterior precision P, which understate the marginal variances where the coordinates correlate.
* ``"lowrank"``: ``AutoLowRankMultivariateNormal``, covariance ``W W^T + diag(d^2)`` with W of
  ``rank`` columns, which can carry the correlations that the data induce between coordinates.
* ``"laplace"``: ``AutoNormal`` in the whitened coordinates u of the Laplace approximation at the
  MAP, z = z_MAP + V |Lambda|^(-1/2) u (``brgm_pyro.inference.laplace``, which ``mcmc``'s
  ``precondition`` shares: a dense Hessian, about 10 s for a 32 px prior on two CPU cores, up to
  ``laplace.MAX_LAPLACE_DIM`` latent coordinates). It starts at the Laplace approximation itself
  (scale 1 in u, so ``init_scale`` is not used) and the ELBO then fits a mean and a scale per
  eigen-direction: a Gaussian with a full covariance whose axes are the Hessian's, which the other
  two guides cannot represent when the data pin directions that are not coordinate axes.

``"auto"`` (the default) takes ``"laplace"`` for one image with up to ``laplace.MAX_LAPLACE_DIM``
latent coordinates (the 32 px prior: 1,024), and ``"normal"`` otherwise: a 1024 px prior has 9,216
latents, whose dense Hessian is too big, and the Hessian of a batch of B images costs B^2 times
that of one (the mean-field guide factorises over the images of a batch at no extra cost).

The normal and low-rank guides start at the MAP (the ``init_values``, in the model's constrained
space) with a small scale ``init_scale`` in the unconstrained space. Latents with a constrained
support (a latent ``sigma_pixel``) are handled by the guides' transforms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoGuide, AutoLowRankMultivariateNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from pyro.optim.clipped_adam import ClippedAdam
from tqdm.auto import tqdm

from brgm_pyro.errors import InputError
from brgm_pyro.inference.laplace import EIGEN_FLOOR, LaplaceWhitening, fits_dense_hessian, initialize_at
from brgm_pyro.inference.params import init_to_prior_median, local_params

__all__ = ["GUIDES", "SVISettings", "WhitenedGuide", "choose_guide", "draw_latents", "make_guide", "run_svi"]

GUIDES = ("auto", "normal", "lowrank", "laplace")


@dataclass(frozen=True)
class SVISettings:
    """Settings of the variational fit.

    Attributes:
        guide: "normal" (AutoNormal), "lowrank" (AutoLowRankMultivariateNormal), "laplace"
            (AutoNormal in the Laplace-whitened coordinates) or "auto": "laplace" for one image
            with up to ``MAX_LAPLACE_DIM`` latent coordinates, "normal" otherwise (module notes).
        rank: rank of the low-rank covariance (None: Pyro's default, the square root of the
            number of latent coordinates).
        steps: SVI steps.
        lr: initial Adam learning rate; it decays geometrically to ``lr * final_lr_ratio``.
        final_lr_ratio: learning rate at the last step relative to ``lr``.
        num_particles: draws of q per ELBO estimate (more: less gradient noise, slower steps).
        init_scale: initial standard deviation of q in the unconstrained space.
    """

    guide: str = "auto"
    rank: int | None = 16
    steps: int = 300
    lr: float = 0.05
    final_lr_ratio: float = 0.1
    num_particles: int = 1
    init_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.guide not in GUIDES:
            raise InputError(f"Unknown SVI guide {self.guide!r}; choose one of: {', '.join(GUIDES)}.")
        if self.rank is not None and not (isinstance(self.rank, int) and self.rank >= 1):
            raise InputError(f"rank must be a positive integer or None, got {self.rank!r}.")
        for name in ("steps", "num_particles"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("lr", "init_scale"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)!r}.")
        if not 0 < self.final_lr_ratio <= 1:
            raise InputError(f"final_lr_ratio must lie in (0, 1], got {self.final_lr_ratio!r}.")


def choose_guide(
    model: Callable, model_kwargs: dict, init_values: dict[str, torch.Tensor], settings: SVISettings
) -> SVISettings:
    """``settings`` with ``guide="auto"`` resolved for this problem (other guides unchanged)."""
    if settings.guide != "auto":
        return settings
    init_params, _, _ = initialize_at(model, model_kwargs, init_values)
    single = model_kwargs["y"].shape[0] == 1
    return replace(settings, guide="laplace" if single and fits_dense_hessian(init_params) else "normal")


def make_guide(model: Callable, settings: SVISettings, init_values: dict[str, torch.Tensor]) -> AutoGuide:
    """The normal or low-rank guide of ``settings.guide`` for ``model``, centred at ``init_values``
    (other sites: prior median)."""
    if settings.guide not in ("normal", "lowrank"):
        raise InputError(f"make_guide builds the 'normal' and 'lowrank' guides, not {settings.guide!r}.")
    init_loc_fn = init_to_value(values=init_values, fallback=init_to_prior_median)
    if settings.guide == "normal":
        return AutoNormal(model, init_loc_fn=init_loc_fn, init_scale=float(settings.init_scale))
    return AutoLowRankMultivariateNormal(
        model, init_loc_fn=init_loc_fn, init_scale=float(settings.init_scale), rank=settings.rank
    )


class WhitenedGuide:
    """The ``"laplace"`` guide: ``AutoNormal`` on u, where z = z_MAP + A u whitens the Hessian of the
    model's potential at the MAP. ``model`` and ``guide`` are what SVI fits; calling the object
    draws the original model's latents (constrained, site -> value)."""

    def __init__(self, model: Callable, model_kwargs: dict, init_values: dict[str, torch.Tensor]) -> None:
        init_params, potential_fn, self.transforms = initialize_at(model, model_kwargs, init_values)
        self.whitening = LaplaceWhitening(
            potential_fn, init_params, EIGEN_FLOOR, option="guide='laplace'", fallback="use guide='normal' or 'lowrank'"
        )
        zeros = torch.zeros_like(self.whitening.z0)
        whitening = self.whitening

        def whitened_model(**_: object) -> None:
            # A flat prior on u (log density 0) and the model's log joint as a factor: the
            # posterior of u is the model's posterior under the affine change of variables.
            u = pyro.sample("u", dist.Normal(zeros, 1.0).mask(False).to_event(1))
            with poutine.block():  # the potential runs the model: keep its sites out of this trace
                log_joint = -whitening.potential({"u": u})
            pyro.factor("log_joint", log_joint)

        self.model = whitened_model
        self.guide = AutoNormal(whitened_model, init_loc_fn=init_to_value(values={"u": zeros}), init_scale=1.0)

    def __call__(self, **_: object) -> dict[str, torch.Tensor]:
        u = self.guide()["u"]
        latents = self.whitening.latents(u[None])
        return {name: self.transforms[name].inv(value[0]) for name, value in latents.items()}


def run_svi(
    model: Callable,
    model_kwargs: dict,
    init_values: dict[str, torch.Tensor],
    settings: SVISettings,
    progress: bool = True,
) -> tuple[AutoGuide | WhitenedGuide, torch.Tensor]:
    """Fit the guide of ``settings`` to ``model(**model_kwargs)``; returns the guide and the loss
    trace, -ELBO (nats, summed over the images of the batch) per step, shape (steps,)."""
    settings = choose_guide(model, model_kwargs, init_values, settings)
    with local_params():
        return _fit(model, model_kwargs, init_values, settings, progress)


def _fit(model: Callable, model_kwargs: dict, init_values: dict[str, torch.Tensor], settings: SVISettings,
         progress: bool) -> tuple[AutoGuide | WhitenedGuide, torch.Tensor]:
    """The fit itself, Pyro's PyTorch-native loop (``Trace_ELBO()(model, guide)`` is a module whose call is the
    differentiable -ELBO), with Pyro's ClippedAdam: gradients clipped to 10 per coordinate, the learning
    rate multiplied by ``lrd`` each step."""
    if settings.guide == "laplace":
        guide = WhitenedGuide(model, model_kwargs, init_values)
        fitted, fitted_guide = guide.model, guide.guide
    else:
        guide = fitted_guide = make_guide(model, settings, init_values)
        fitted = model
    elbo = Trace_ELBO(num_particles=settings.num_particles)(fitted, fitted_guide)
    elbo(**model_kwargs)  # creates the guide's parameters
    decay = settings.final_lr_ratio ** (1.0 / settings.steps)
    optimizer = ClippedAdam(elbo.parameters(), lr=settings.lr, lrd=decay)
    losses = []
    bar = tqdm(range(settings.steps), disable=not progress, desc=f"SVI ({settings.guide})", leave=False)
    for _ in bar:
        optimizer.zero_grad()
        loss = elbo(**model_kwargs)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress:
            bar.set_postfix(elbo=f"{-losses[-1]:.4g}", refresh=False)
    return guide, torch.tensor(losses)


@torch.no_grad()
def draw_latents(guide: AutoGuide | WhitenedGuide, model_kwargs: dict, num_samples: int) -> dict[str, torch.Tensor]:
    """``num_samples`` independent draws of every latent site from the fitted guide: name -> (S, ...)."""
    with local_params():
        draws = [guide(**model_kwargs) for _ in range(num_samples)]
    return {name: torch.stack([draw[name] for draw in draws]) for name in draws[0]}
