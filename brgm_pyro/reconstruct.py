"""MAP reconstruction, ``reconstruct``, and its result, ``ReconstructionResult`` (the paper's Eq. 8-9).

    rec = reconstruct(y, f, G)      rec.image (B, C, H, W) in [0, 1], rec.w, rec.losses, rec.data_consistency

``reconstruct`` prepares the problem (``brgm_pyro.problem``) and hands it to
``map_reconstruction``, the MAP step that ``sample_posterior`` also starts from: the mode search
(``brgm_pyro.search``: draws of G's prior ranked by their likelihood of y, the K best refined
together) and, per image, the mode of highest posterior density; then the estimate of the clean
image at it.

The image returned is E[x | y, w*] = G(w*) + E[r | y, w*], not G(w*) alone: no G(w) equals a real
image (the prior's reach r, ``uncertainty.discrepancy``), so G(w*) misses the pixels the user
observed by about the reach. With r ~ N(0, sigma_reach^2 I) given y, f and the noise, its
conditional mean moves an observed pixel of a mask towards y by sigma_reach^2 / (sigma_reach^2 +
sigma_pixel^2), leaves a hole as G(w*) has it, and restores the consistency of a super-resolution
with y up to the noise. ``rec.generator_image`` keeps G(w*).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyro
import torch
from pyro import poutine
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.inference.map import MAPSchedule, run_map
from brgm_pyro.models import brgm
from brgm_pyro.models.protocol import BRGMModel
from brgm_pyro.models.variants import get_model
from brgm_pyro.problem import Problem, frozen, prepare_problem
from brgm_pyro.search import Modes, SearchSettings, average_start, search_modes
from brgm_pyro.uncertainty.discrepancy import has_structure, reach_mean

__all__ = ["ReconstructionResult", "data_consistency", "map_reconstruction", "reconstruct", "resolve_reach"]

DEFAULT_SEARCH = SearchSettings()


@dataclass
class ReconstructionResult:
    """The MAP reconstruction of a batch.

    Attributes:
        image: the estimate of the clean image, E[x | y, w*] = G(w*) + E[r | y, w*] in [0, 1],
            (B, C, H, W) (G(w*) itself where there is no reach: ``sigma_reach`` None).
        generator_image: G(w*) in [0, 1].
        w: the MAP latents, (B, num_ws, w_dim) (mapping(z*) on every layer for the mapping model).
        y: the corrupted input as the model saw it (0 where f does not observe it), (B, C, h, w).
        y_reconstructed: f(image), comparable to y.
        observed: observation mask of y (1 = observed), broadcastable to y.
        losses: term -> (steps + 1, B) tensor of -log p contributions per image of the mode returned
            ("prior", "colinear", "pixel", "percept", "total"): before each step, and at the end.
        data_consistency: per image, RMSE and PSNR (dB) between f(image) and y on observed pixels
            (paper Fig. 8); ``generator_consistency`` the same for f(G(w*)).
        params, schedule: the model parameters and the optimiser schedule used.
        latents: the MAP of the model's latents other than w, name -> value per image (z of the mapping
            model, the blur width "sigma_b" (B,) of unknown-blur); empty for brgm.model.
        modes: the modes the search found (``brgm_pyro.search.Modes``), None for a single start.
        sigma_reach: the prior's reach used for the estimate, None without one.
        notes: sentences a user should read about how this result was made.
    """

    image: torch.Tensor
    w: torch.Tensor
    y: torch.Tensor
    y_reconstructed: torch.Tensor
    observed: torch.Tensor
    losses: dict[str, torch.Tensor]
    data_consistency: dict[str, torch.Tensor]
    params: brgm.BRGMParams
    schedule: MAPSchedule
    settings: dict[str, Any] = field(default_factory=dict)
    latents: dict[str, torch.Tensor] = field(default_factory=dict)
    generator_image: torch.Tensor | None = None
    generator_consistency: dict[str, torch.Tensor] = field(default_factory=dict)
    modes: Modes | None = None
    sigma_reach: float | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.generator_image is None:
            self.generator_image = self.image

    def select(self, index: int) -> ReconstructionResult:
        """The MAP of image ``index`` of the batch, as if it had been reconstructed alone."""
        one = slice(index, index + 1)
        return replace(
            self,
            image=self.image[one],
            generator_image=self.generator_image[one],
            w=self.w[one],
            y=self.y[one],
            y_reconstructed=self.y_reconstructed[one],
            observed=self.observed if self.observed.shape[0] == 1 else self.observed[one],
            losses={term: values[:, one] for term, values in self.losses.items()},
            data_consistency={name: values[one] for name, values in self.data_consistency.items()},
            generator_consistency={name: values[one] for name, values in self.generator_consistency.items()},
            latents={name: values[one] for name, values in self.latents.items()},
            modes=None if self.modes is None else self.modes.select(index),
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary: settings, final loss terms, data consistency and the modes per image."""
        out = {
            "params": asdict(self.params),
            "schedule": asdict(self.schedule),
            "settings": self.settings,
            "final_losses": {k: v[-1].tolist() for k, v in self.losses.items()},
            "data_consistency": {k: v.tolist() for k, v in self.data_consistency.items()},
            "generator_consistency": {k: v.tolist() for k, v in self.generator_consistency.items()},
            "latents": {k: v.tolist() for k, v in self.latents.items() if v[0].numel() == 1},
            "sigma_reach": self.sigma_reach,
        }
        if self.modes is not None:
            out["modes"] = {"log_joint": self.modes.log_joint.T.tolist(), "bank_index": self.modes.bank_index.T.tolist(),
                            "seconds": self.modes.seconds}
            if self.modes.refined is not None:  # which modes went to the end (the others stopped at prune_at)
                out["modes"]["refined"] = self.modes.refined.T.tolist()
        return out


def data_consistency(y_reconstructed: torch.Tensor, y: torch.Tensor, observed: torch.Tensor) -> dict[str, torch.Tensor]:
    """RMSE and PSNR (dB, peak 1) between f(x) and y over the observed pixels, per image."""
    weight = observed.expand_as(y)
    err = ((y_reconstructed - y) ** 2 * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1)
    return {"rmse": err.sqrt().cpu(), "psnr": (-10 * torch.log10(err.clamp_min(1e-12))).cpu()}


def reconstruct(
    y: torch.Tensor,
    f: nn.Module,
    G: nn.Module,
    params: brgm.BRGMParams | str | None = None,
    perceptual: str | nn.Module | None = "auto",
    steps: int | None = None,
    lr: float | None = None,
    schedule: MAPSchedule | None = None,
    model: str | Callable | BRGMModel | None = None,
    search: SearchSettings | None = DEFAULT_SEARCH,
    sigma_reach: float | str | None = "auto",
    seed: int = 0,
    progress: bool = True,
) -> ReconstructionResult:
    """MAP reconstruction of the corrupted images y (B, C, h, w) under the corruption f.

    Args:
        y: corrupted images.
        f: the corruption operator (``brgm_pyro.forward``), mapping G's images to y's shape.
        G: the generator (``load_generator`` or ``StyleGAN2Generator``); its device is used.
        params: :class:`~brgm_pyro.models.brgm.BRGMParams` or a preset name ("default", "paper",
            "brgm-reference"); "default" takes a registered prior's tuned settings.
        perceptual: feature network for the perceptual likelihood: "auto" (the prior card's
            choice, none for a bare generator), None, a registered name, or a ``FeatureNetwork``.
        steps, lr: shortcuts overriding the schedule's fields.
        schedule: Adam schedule (:class:`~brgm_pyro.inference.map.MAPSchedule`); default: a
            registered prior's tuned steps and learning rate, else ``MAPSchedule()``.
        model: a registered model name, a :class:`~brgm_pyro.models.protocol.BRGMModel` or a Pyro model
            with the signature of ``brgm.model`` (default: ``brgm.model``); for a model that integrates
            latents out (``collapsed``, as learned-noise does with sigma_pixel) the MAP is the mode of
            p(w | y) with them integrated out.
        search: the mode search (:class:`~brgm_pyro.search.SearchSettings`): the MAP is the mode of
            highest posterior density it finds; None for the single start from the prior's average.
        sigma_reach: the prior's reach for the estimate E[x | y, w*] (module notes): "auto" the card's
            (none for a bare generator, a model that infers f, or an f without structure), None
            for G(w*) alone, or a positive number.
        seed: seed of Pyro and torch for this run.
        progress: show a progress bar.
    """
    problem = prepare_problem(y, f, G, params, perceptual)
    overrides = {k: v for k, v in (("steps", steps), ("lr", lr)) if v is not None}
    if overrides:
        schedule = replace(schedule or problem.card.schedule, **overrides)
    return map_reconstruction(problem, schedule, model, seed, progress, search, sigma_reach)


def resolve_reach(sigma_reach: float | str | None, problem: Problem, spec: BRGMModel) -> float | None:
    """The reach of the MAP's estimate: "auto" is the card's where f has structure and is known, a number
    is checked, None is none."""
    if isinstance(sigma_reach, str) and sigma_reach == "auto":
        known = not spec.infers_corruption and has_structure(problem.forward)
        return problem.card.sigma_reach if known else None
    if sigma_reach is None or sigma_reach == 0:
        return None
    if isinstance(sigma_reach, bool) or not isinstance(sigma_reach, (int, float)) or not 0 < sigma_reach < float("inf"):
        raise InputError(f"sigma_reach must be 'auto', None, 0 or a positive number, got {sigma_reach!r}.")
    if not has_structure(problem.forward) or spec.infers_corruption:
        raise InputError("The estimate G(w) + E[r | y, w] needs a known linear operator f; pass sigma_reach=None.")
    return float(sigma_reach)


def _deterministic(spec: BRGMModel, problem: Problem, latents: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """w (B, num_ws, w_dim) and G(w) unclamped, (B, C, H, W), of the model at its latents."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(poutine.condition(spec.inferred, data=latents)).get_trace(**problem.model_kwargs())
    return trace.nodes["w"]["value"].detach(), trace.nodes["image"]["value"].detach()


def map_reconstruction(
    problem: Problem, schedule: MAPSchedule | None = None, model: str | Callable | BRGMModel | None = None,
    seed: int = 0, progress: bool = True, search: SearchSettings | None = DEFAULT_SEARCH,
    sigma_reach: float | str | None = "auto",
) -> ReconstructionResult:
    """The MAP of a prepared problem (``prepare_problem``): the mode of highest posterior density the search
    finds (or the one from the prior's average with ``search=None``), its G(w) and the estimate of the
    clean image (module notes).

    ``schedule`` None takes the prior card's (``MAPSchedule()`` without a card); ``model``, ``seed``,
    ``progress``, ``search`` and ``sigma_reach`` are those of :func:`reconstruct`. A model that infers
    a parameter of the corruption (``BRGMModel.corruption``; unknown-blur: the blur width) gives f(G(w))
    under f at that parameter's MAP.
    """
    schedule = schedule or problem.card.schedule
    spec = get_model(model)
    reach = resolve_reach(sigma_reach, problem, spec)
    # A model that integrates latents out (``collapsed``; learned-noise: sigma_pixel) is maximised
    # over w alone: the mode of p(w | y). The joint mode with a latent noise level is degenerate:
    # sigma_pixel shrinks onto the fit's own residual, which pulls w into fitting noise.
    G = problem.generator
    notes = []
    if search is not None and not callable(getattr(G, "mapping", None)):
        notes.append(f"The mode search needs G's own prior (a mapping network), which {type(G).__name__} has not: "
                     "the MAP starts from the prior's average alone.")
        search = None
    pyro.set_rng_seed(seed)
    with frozen(G):
        modes = None
        if search is None:
            latents, losses = run_map(spec.inferred, (), problem.model_kwargs(), average_start(spec, problem), schedule,
                                      progress=progress)
        else:
            modes = search_modes(problem, spec, schedule, search, progress=progress)
            best = modes.best
            latents = modes.pick(best)
            batch = torch.arange(best.shape[0])
            losses = {name: value[:, best, batch] for name, value in modes.losses.items()}
        w, generator_image = _deterministic(spec, problem, latents)
        forward = spec.corruption(problem.forward, latents) if spec.infers_corruption else problem.forward
        with torch.no_grad():
            y_generator = forward(generator_image)
            image = generator_image
            if reach is not None:
                sigma_pixel = latents["sigma_pixel"] if "sigma_pixel" in latents else problem.params.sigma_pixel
                image = generator_image + reach_mean(problem.y - y_generator, forward, reach, sigma_pixel)
            image = image.clamp(0.0, 1.0)
            y_rec = forward(image)
    others = {name: value.cpu() for name, value in latents.items() if name != "w"}
    return ReconstructionResult(
        image=image.cpu(),
        generator_image=generator_image.clamp(0.0, 1.0).cpu(),
        w=w.cpu(),
        y=problem.y.cpu(),
        y_reconstructed=y_rec.cpu(),
        observed=problem.observed.cpu(),
        losses=losses,
        data_consistency=data_consistency(y_rec, problem.y, problem.observed),
        generator_consistency=data_consistency(forward(generator_image.clamp(0.0, 1.0)), problem.y, problem.observed),
        params=problem.params,
        schedule=schedule,
        settings={
            "perceptual": type(problem.perceptual).__name__ if problem.perceptual is not None else None,
            "seed": seed,
            "generator": getattr(G, "name", None) or G.config,
            "model": spec.name,
            "search": None if search is None else asdict(search),
        },
        latents=others,
        modes=modes,
        sigma_reach=reach,
        notes=tuple(notes),
    )
