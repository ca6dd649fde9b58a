"""MAP inference for BRGM: an ``AutoDelta`` guide on w, optimised with Adam.

With a point-mass guide the ELBO is the log joint, so each step is one Adam step on
``-log p(w, y)``, the paper's Eq. 8 halved. The loss function below is that negative log joint,
computed from one trace of the model replayed against the guide, which also yields each term
(prior, colinear, pixel, perceptual) per image for the loss trace at no extra cost.

The loop is Pyro's "native PyTorch optimizer" pattern: the guide's parameters go to
``torch.optim.Adam`` and the loss is differentiated directly. It is the same optimisation as
``pyro.infer.SVI`` with ``pyro.optim.Adam``, without SVI's per-step parameter-capture trace and
per-parameter optimizer bookkeeping, which cost about a tenth of a step for a 32 px generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from brgm_pyro.errors import InputError

__all__ = ["MAPSchedule", "TERM_NAMES", "log_joint", "lr_factor", "run_map"]

# Model site -> name of the term in the paper's Eq. 9.
TERM_NAMES = {"w": "prior", "colinear": "colinear", "y": "pixel", "y_features": "percept"}


@dataclass(frozen=True)
class MAPSchedule:
    """Adam with StyleGAN2's projector schedule: linear warm-up, cosine ramp-down.

    ``lr(t) = lr * min(1, t / rampup) * (0.5 - 0.5 cos(pi * min(1, (1 - t) / rampdown)))`` for
    ``t = step / steps``; ``rampup = rampdown = 0`` gives a constant rate (the authors' code).
    ``starts`` > 1 runs the MAP that many times per image, from w_avg and from ``starts - 1`` draws
    of the mapping network, and keeps per image the run of highest posterior density (lowest final
    -log p), never a choice by the truth (``brgm_pyro.reconstruct.map_reconstruction``). With
    ``candidates`` > 0 those draws are the ``starts - 1`` of highest posterior density per image
    among ``candidates`` mapping draws (one batched evaluation of -log p each, no optimisation).
    """

    steps: int = 300
    lr: float = 0.05
    rampup: float = 0.05
    rampdown: float = 0.25
    betas: tuple[float, float] = (0.9, 0.999)
    starts: int = 1
    candidates: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "starts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        if isinstance(self.candidates, bool) or not (isinstance(self.candidates, int) and self.candidates >= 0):
            raise InputError(f"candidates must be a non-negative integer, got {self.candidates!r}.")
        if 0 < self.candidates < self.starts - 1:
            raise InputError(
                f"candidates ({self.candidates}) must be at least starts - 1 ({self.starts - 1}), the draws "
                "kept; raise candidates or set it to 0."
            )
        if not self.lr > 0:
            raise InputError(f"The learning rate must be positive, got {self.lr!r}.")


def lr_factor(step: int, schedule: MAPSchedule) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    t = step / schedule.steps
    factor = 1.0
    if schedule.rampdown > 0:
        factor = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / schedule.rampdown))
    if schedule.rampup > 0:
        factor *= min(1.0, (step + 1) / (schedule.steps * schedule.rampup))
    return factor


def _is_term(name: str, site: dict) -> bool:
    """A sample site with a density in the model's joint (subsample and deterministic sites have none)."""
    return not site_is_subsample(site) and not site["infer"].get("_deterministic")


@dataclass
class _TermRecorder:
    """Negative log joint of a point-mass guide, keeping each term per image.

    Each term is Pyro's own log density of the site, ``site["log_prob"]`` of
    ``Trace.compute_log_prob``: scaled by ``poutine.scale`` and subsampling plates and masked by
    ``poutine.mask``, as ``Trace_ELBO`` would count it.
    """

    last: dict[str, torch.Tensor] = field(default_factory=dict)

    def __call__(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        model_trace.compute_log_prob(site_filter=_is_term)
        loss = 0.0
        terms = {}
        for name, site in model_trace.nodes.items():
            if "log_prob" in site:
                terms[TERM_NAMES.get(name, name)] = -site["log_prob"].detach()
                loss = loss - site["log_prob_sum"]
        self.last = terms
        return loss


def _per_image(term: torch.Tensor) -> torch.Tensor:
    """A site's -log p, of batch shape (..., B) with the images' plate rightmost as in ``brgm.model``,
    summed over the other plates: (B,). A site outside the images' plate stays a scalar."""
    return term.reshape(-1, term.shape[-1]).sum(0) if term.dim() else term


@torch.no_grad()
def log_joint(model: Callable, model_kwargs: dict, w: torch.Tensor) -> torch.Tensor:
    """log p(w, y) per image, (B,), of ``model(**model_kwargs)`` at w (B, L, D); any other latent at a draw
    of its prior. Each term is Pyro's own (scaled, masked) site log density, as in the MAP."""
    trace = poutine.trace(poutine.condition(model, data={"w": w})).get_trace(**model_kwargs)
    trace.compute_log_prob(site_filter=_is_term)
    return sum(_per_image(site["log_prob"]) for site in trace.nodes.values() if "log_prob" in site)


def run_map(
    model: Callable,
    model_args: tuple,
    model_kwargs: dict,
    init_w: torch.Tensor,
    schedule: MAPSchedule,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Optimise the latents of ``model(*model_args, **model_kwargs)``, w from ``init_w`` (B, L, D) and any
    other latent from its prior median.

    Returns the MAP of every latent site, name -> value ("w": (B, L, D); a variant's other latents,
    such as an unknown blur width, in their own shapes), and the loss trace: term name -> (steps, B)
    tensor of ``-log p`` contributions (nats) per image, plus ``"total"``.
    """
    pyro.clear_param_store()
    guide = AutoDelta(model, init_loc_fn=init_to_value(values={"w": init_w.detach().clone()}))
    with torch.no_grad():
        guide(*model_args, **model_kwargs)  # creates the guide's parameters at the initial values
    optimizer = torch.optim.Adam(guide.parameters(), lr=schedule.lr, betas=schedule.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, schedule))
    recorder = _TermRecorder()
    trace: dict[str, list[torch.Tensor]] = {}
    bar = tqdm(range(schedule.steps), disable=not progress, desc="MAP", leave=False)
    for step in bar:
        # The first step checks every distribution's arguments and values (Pyro's validation);
        # later steps see the same shapes and supports, so they skip those checks.
        with pyro.validation_enabled(step == 0 and pyro.distributions.is_validation_enabled()):
            loss = recorder(model, guide, *model_args, **model_kwargs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        for name, value in recorder.last.items():
            trace.setdefault(name, []).append(_per_image(value))
        if progress:
            bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
    losses = {name: torch.stack(values).cpu() for name, values in trace.items()}
    losses["total"] = sum(losses.values())
    with torch.no_grad():
        latents = {name: value.detach() for name, value in guide.median(*model_args, **model_kwargs).items()}
    return latents, losses
