"""MAP inference for BRGM: an ``AutoDelta`` guide on w, optimised with Adam.

With a point-mass guide the ELBO is the log joint, so each step is one Adam step on
``-log p(w, y)``, the paper's Eq. 8 halved. The loss function below is that negative log joint,
computed from one trace of the model replayed against the guide, which also yields each term
(prior, colinear, pixel, perceptual) per image for the loss trace at no extra cost. After the
first step the loss is a recording of those operations, replayed (``_NegativeLogJoint``), so a
step costs what its arithmetic costs.

The loop is Pyro's "native PyTorch optimizer" pattern: the guide's parameters go to
``torch.optim.Adam`` and the loss is differentiated directly. It is the same optimisation as
``pyro.infer.SVI`` with ``pyro.optim.Adam``, without SVI's per-step parameter-capture trace and
per-parameter optimizer bookkeeping, which cost about a tenth of a step for a 32 px generator.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from brgm_pyro.errors import InputError
from brgm_pyro.inference.params import init_to_prior_median, local_params

__all__ = ["MAPSchedule", "TERM_NAMES", "log_joint", "lr_factor", "run_map"]

# Model site -> name of the term in the paper's Eq. 9.
TERM_NAMES = {"w": "prior", "colinear": "colinear", "y": "pixel", "y_features": "percept"}


@dataclass(frozen=True)
class MAPSchedule:
    """Adam with StyleGAN2's projector schedule: linear warm-up, cosine ramp-down.

    The rate at step k = 0, ..., steps - 1 is ``lr * lr_factor(k, schedule)``, with

        lr_factor(k) = min(1, (k + 1) / (steps * rampup)) * (0.5 - 0.5 * cos(pi * min(1, (1 - k / steps) / rampdown)))

    each factor 1 where its ramp is 0: ``rampup = rampdown = 0`` gives a constant rate (the
    authors' code). The warm-up counts the step being taken, so the first step moves. Where the MAP
    starts is the mode search's (``brgm_pyro.search``).
    """

    steps: int = 300
    lr: float = 0.05
    rampup: float = 0.05
    rampdown: float = 0.25
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not (isinstance(self.steps, int) and self.steps >= 1):
            raise InputError(f"steps must be a positive integer, got {self.steps!r}.")
        if not self.lr > 0:
            raise InputError(f"The learning rate must be positive, got {self.lr!r}.")


def lr_factor(step: int, schedule: MAPSchedule) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): the formula of :class:`MAPSchedule`."""
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


def _log_densities(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """Each density site's log p at the guide's point: ``site["log_prob"]`` of ``Trace.compute_log_prob``.

    That is Pyro's own log density, scaled by ``poutine.scale`` and subsampling plates and masked by
    ``poutine.mask``, as ``Trace_ELBO`` would count it. With a point-mass guide the negative sum of
    all of them is the loss.
    """
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    model_trace.compute_log_prob(site_filter=_is_term)
    return {name: site["log_prob"] for name, site in model_trace.nodes.items() if "log_prob" in site}


class _NegativeLogJoint:
    """``-log p`` of the model at the guide's point, and each site's ``-log p`` term.

    The first call runs the model under Pyro, with Pyro's validation where it is enabled. The
    second records the operations of one evaluation with ``torch.jit.trace``, as a function of the
    guide's parameters (what Pyro's ``JitTrace_ELBO`` does), and later calls replay that
    recording: the step costs the arithmetic of G, f, phi and the densities, without the Python of
    the model, of Pyro's handlers and of the distributions' objects. The replay is plain execution
    (``optimized_execution(False)``): no profiling runs, no graph compilation, the same operations.

    A recording holds one fixed sequence of operations, so a model must not branch in Python on a
    latent's value or turn one into a Python number (``float(w)``): pass ``traced=False`` for such a
    model. The third call checks the recording against the model at a new point and keeps the
    calls eager if they disagree, as it does where the recording cannot be made.
    """

    def __init__(self, model: Callable, guide: Callable, args: tuple, kwargs: dict, traced: bool) -> None:
        self.densities = partial(_log_densities, model, guide, args, kwargs)
        self.params = tuple(guide.parameters())
        self.traced = traced
        self.calls = 0
        self.names: list[str] = []
        self.recording: Callable | None = None

    def __call__(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.calls += 1
        if self.calls == 2 and self.traced:
            self.recording = self._record()
        if self.recording is not None:
            with torch.jit.optimized_execution(False):
                loss, *terms = self.recording(*self.params)
            if self.calls != 3 or self._agrees(loss):
                return loss, dict(zip(self.names, terms))
            self.recording = None
        # Pyro checks every distribution's arguments and values on the first call; later calls see
        # the same shapes and supports.
        with pyro.validation_enabled(self.calls == 1 and pyro.distributions.is_validation_enabled()):
            loss, *terms = self._evaluate()
        return loss, dict(zip(self.names, terms))

    def _evaluate(self, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The loss and the terms in the order of ``names``; ``params`` are the tensors that the guide reads."""
        log_p = self.densities()
        self.names = self.names or list(log_p)
        terms = [-log_p[name] for name in self.names]
        return (sum(t.sum() for t in terms), *terms)

    def _record(self) -> Callable | None:
        try:
            # Recording without autograd's bookkeeping records the same operations, a third faster.
            with warnings.catch_warnings(), pyro.validation_enabled(False), torch.no_grad():
                # The tracer warns at every shape check of Pyro and of phi (the shapes are fixed for
                # the run) and that it is deprecated (the eager loop is the fallback).
                warnings.simplefilter("ignore")
                return torch.jit.trace(self._evaluate, self.params, check_trace=False)
        except Exception as err:  # noqa: BLE001  (whatever the tracer rejects, the eager loop is correct)
            warnings.warn(f"The MAP runs the model eagerly: recording its log density failed ({err}).", stacklevel=4)
            return None

    def _agrees(self, recorded: torch.Tensor) -> bool:
        """Whether the recording gives the model's loss at the current point (evaluated again, eagerly)."""
        with torch.no_grad(), pyro.validation_enabled(False):
            model = self._evaluate()[0]
        if torch.allclose(recorded, model, rtol=1e-5, atol=1e-6):
            return True
        warnings.warn("The MAP runs the model eagerly: its recorded log density differs from the model's "
                      f"({recorded.item():.6g} against {model.item():.6g}); does the model branch on a "
                      "latent's value?", stacklevel=4)
        return False


def _segment(segment: tuple[int, int] | None, schedule: MAPSchedule) -> tuple[int, int]:
    """The steps (first, stop) of ``schedule`` that one call of ``run_map`` takes, checked."""
    if segment is None:
        return 0, schedule.steps
    first, stop = segment
    if not (isinstance(first, int) and isinstance(stop, int) and 0 <= first < stop <= schedule.steps):
        raise InputError(f"A MAP segment is (first, stop) with 0 <= first < stop <= {schedule.steps} steps, got {segment!r}.")
    return first, stop


def _guide_sites(guide: AutoDelta) -> dict[str, torch.nn.Parameter]:
    """The point-mass guide's parameters by latent site name (``AutoDelta`` names each one's unconstrained
    value ``<site>_unconstrained``)."""
    return {name.removesuffix("_unconstrained"): param for name, param in guide.named_parameters()}


def _per_image(terms: list[torch.Tensor]) -> torch.Tensor:
    """A site's -log p at each step, of batch shape (..., B) with the images' plate rightmost as in
    ``brgm.model``, summed over the other plates: (steps, B). A site outside the images' plate: (steps,)."""
    stacked = torch.stack(terms)
    return stacked.reshape(len(terms), -1, stacked.shape[-1]).sum(1) if stacked.dim() > 1 else stacked


@torch.no_grad()
def log_joint(model: Callable, model_kwargs: dict, w: torch.Tensor) -> torch.Tensor:
    """log p(w, y) per image, (B,), of ``model(**model_kwargs)`` at w (B, L, D); any other latent at a draw
    of its prior. Each term is Pyro's own (scaled, masked) site log density, as in the MAP."""
    trace = poutine.trace(poutine.condition(model, data={"w": w})).get_trace(**model_kwargs)
    trace.compute_log_prob(site_filter=_is_term)
    return sum(_per_image([site["log_prob"]])[0] for site in trace.nodes.values() if "log_prob" in site)


def run_map(
    model: Callable,
    model_args: tuple,
    model_kwargs: dict,
    init: torch.Tensor | dict[str, torch.Tensor],
    schedule: MAPSchedule,
    progress: bool = True,
    traced: bool = True,
    segment: tuple[int, int] | None = None,
    adam_state: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Optimise the latents of ``model(*model_args, **model_kwargs)`` from ``init``: a dict of starting
    values (site -> value; e.g. {"w": (B, L, D)}, or {"z": (B, z_dim)} for the mapping model), or w
    itself; any other latent starts at its prior median.

    Returns the MAP of every latent site, name -> value ("w": (B, L, D); a variant's other latents,
    such as an unknown blur width, in their own shapes), and the loss trace: term name -> (steps + 1, B)
    tensor of ``-log p`` contributions (nats) per image, plus ``"total"``: row k at the point before
    step k, the last row at the latents returned. ``traced`` replays a
    recording of the model's log density after the first steps (see ``_NegativeLogJoint``); False
    runs the model under Pyro at every step.

    ``segment = (first, stop)`` runs the schedule's steps first, ..., stop - 1 alone (the rate of each is
    the schedule's at that step), so that an optimisation can stop and go on with fewer images (the mode
    search drops the modes it no longer needs). ``adam_state`` carries Adam's state between segments:
    site -> {"step", "exp_avg", "exp_avg_sq"}, (B, ...) like the site; read at the start where it holds
    the site, written at the end. Two segments with the state carried over (and sliced to the images
    kept) take the same steps as one run.
    """
    with local_params():
        values = init if isinstance(init, dict) else {"w": init}
        values = {name: value.detach().clone() for name, value in values.items()}
        init_loc_fn = init_to_value(values=values, fallback=init_to_prior_median)
        guide = AutoDelta(model, init_loc_fn=init_loc_fn)
        with torch.no_grad():
            guide(*model_args, **model_kwargs)  # creates the guide's parameters at the initial values
        first, stop = _segment(segment, schedule)
        sites = _guide_sites(guide)
        optimizer = torch.optim.Adam(sites.values(), lr=schedule.lr, betas=schedule.betas)
        for name, param in sites.items():
            if adam_state is not None and name in adam_state:
                optimizer.state[param] = {key: value.clone() for key, value in adam_state[name].items()}
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step + first, schedule))
        negative_log_joint = _NegativeLogJoint(model, guide, model_args, model_kwargs, traced)
        trace: dict[str, list[torch.Tensor]] = {}
        bar = tqdm(range(stop - first + 1), disable=not progress, desc="MAP", leave=False)
        for step in bar:
            if step == stop - first:  # the terms where the optimisation ends, at the latents returned
                with torch.no_grad():
                    loss, terms = negative_log_joint()
            else:
                loss, terms = negative_log_joint()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            for name, value in terms.items():
                trace.setdefault(TERM_NAMES.get(name, name), []).append(value.detach())
            if progress:
                bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
        if adam_state is not None:
            for name, param in sites.items():
                if optimizer.state.get(param):
                    adam_state[name] = {key: value.detach().clone() for key, value in optimizer.state[param].items()}
        losses = {name: _per_image(values).cpu() for name, values in trace.items()}
        losses["total"] = sum(losses.values())
        with torch.no_grad():
            latents = {name: value.detach() for name, value in guide.median(*model_args, **model_kwargs).items()}
    return latents, losses
