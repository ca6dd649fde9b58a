"""MAP reconstruction, ``reconstruct``, and its result, ``ReconstructionResult`` (the paper's Eq. 8-9).

    rec = reconstruct(y, f, G)      rec.image (B, C, H, W) in [0, 1], rec.w, rec.losses, rec.data_consistency

``reconstruct`` prepares the problem (``brgm_pyro.problem``) and hands it to
``map_reconstruction``, the MAP step that ``sample_posterior`` also starts from: the model's
negative log joint minimised over w by ``brgm_pyro.inference.map.run_map``, then G(w) and f(G(w)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyro
import torch
from torch import nn

from brgm_pyro.inference.map import MAPSchedule, log_joint, run_map
from brgm_pyro.models import brgm
from brgm_pyro.models.protocol import BRGMModel
from brgm_pyro.models.variants import get_model
from brgm_pyro.problem import Problem, frozen, prepare_problem
from brgm_pyro.stylegan2 import to_unit

__all__ = ["ReconstructionResult", "data_consistency", "map_reconstruction", "reconstruct"]


@dataclass
class ReconstructionResult:
    """The MAP reconstruction of a batch.

    Attributes:
        image: G(w) in [0, 1], (B, C, H, W).
        w: the MAP latents, (B, num_ws, w_dim).
        y: the corrupted input, (B, C, h, w).
        y_reconstructed: f(image), the corrupted reconstruction, comparable to y.
        observed: observation mask of y (1 = observed), broadcastable to y.
        losses: term -> (steps + 1, B) tensor of -log p contributions per image
            ("prior", "colinear", "pixel", "percept", "total"): before each step, and at the end.
        data_consistency: per image, RMSE and PSNR (dB) between f(image) and y on observed
            pixels: how far the reconstruction is from explaining the input (paper Fig. 8).
        params, schedule: the model parameters and the optimiser schedule used.
        latents: the MAP of the model's latents other than w, name -> value per image (a
            variant's, e.g. the blur width "sigma_b" (B,) of ``unknown-blur``); empty for brgm.model.
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

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary: settings, final loss terms and data consistency per image."""
        return {
            "params": asdict(self.params),
            "schedule": asdict(self.schedule),
            "settings": self.settings,
            "final_losses": {k: v[-1].tolist() for k, v in self.losses.items()},
            "data_consistency": {k: v.tolist() for k, v in self.data_consistency.items()},
            "latents": {k: v.tolist() for k, v in self.latents.items()},
        }


def data_consistency(y_reconstructed: torch.Tensor, y: torch.Tensor, observed: torch.Tensor) -> dict[str, torch.Tensor]:
    """RMSE and PSNR (dB, peak 1) between f(G(w)) and y over the observed pixels, per image."""
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
    seed: int = 0,
    progress: bool = True,
) -> ReconstructionResult:
    """MAP reconstruction of the corrupted images y (B, C, h, w) in [0, 1] under the corruption f.

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
        seed: seed of Pyro and torch for this run.
        progress: show a progress bar.
    """
    problem = prepare_problem(y, f, G, params, perceptual)
    overrides = {k: v for k, v in (("steps", steps), ("lr", lr)) if v is not None}
    if overrides:
        schedule = replace(schedule or problem.card.schedule, **overrides)
    return map_reconstruction(problem, schedule, model, seed, progress)


def _starting_points(model: Callable, problem: Problem, schedule: MAPSchedule, seed: int) -> list[torch.Tensor]:
    """w_avg, then ``starts - 1`` mapping draws (seeded by ``seed``), each (batch, num_ws, w_dim): drawn per
    image, or with ``candidates`` the ones of highest posterior density per image among that many draws."""
    G, batch = problem.generator, problem.y.shape[0]
    points = [G.w_avg.expand(batch, G.num_ws, G.w_dim).clone()]
    if schedule.starts == 1:
        return points
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if not schedule.candidates:
            for _ in range(schedule.starts - 1):
                points.append(G.mapping(torch.randn(batch, G.z_dim, generator=generator).to(G.w_avg.device)).clone())
            return points
        draws = G.mapping(torch.randn(schedule.candidates, G.z_dim, generator=generator).to(G.w_avg.device))
        kwargs = problem.model_kwargs()
        scores = torch.stack([log_joint(model, kwargs, w.expand(batch, -1, -1)) for w in draws])  # (C, B)
        best = scores.topk(schedule.starts - 1, dim=0).indices  # (starts - 1, B)
    return points + [draws[rank].clone() for rank in best]


def _best_of_starts(
    model: Callable, problem: Problem, schedule: MAPSchedule, seed: int, progress: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``run_map`` from each starting point; per image, the latents and loss trace of the run that ends
    at the lowest -log p (the highest posterior density)."""
    best_latents: dict[str, torch.Tensor] = {}
    best_losses: dict[str, torch.Tensor] = {}
    for init_w in _starting_points(model, problem, schedule, seed):
        latents, losses = run_map(model, (), problem.model_kwargs(), init_w, schedule, progress=progress)
        if not best_losses:
            best_latents, best_losses = latents, losses
            continue
        better = losses["total"][-1] < best_losses["total"][-1]
        for name, value in latents.items():
            keep = better.to(value.device).reshape(-1, *([1] * (value.dim() - 1)))
            best_latents[name] = torch.where(keep, value, best_latents[name])
        best_losses = {name: torch.where(better, value, best_losses[name]) for name, value in losses.items()}
    return best_latents, best_losses


def map_reconstruction(
    problem: Problem, schedule: MAPSchedule | None = None, model: str | Callable | BRGMModel | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ReconstructionResult:
    """The MAP w of a prepared problem (``prepare_problem``), from w = w_avg (and more starting points
    with ``schedule.starts``), with G(w) and f(G(w)).

    ``schedule`` None takes the prior card's (``MAPSchedule()`` without a card); ``model``, ``seed``
    and ``progress`` are those of :func:`reconstruct`. A model that infers a parameter of the
    corruption (``BRGMModel.corruption``; unknown-blur: the blur width) gives f(G(w)) under f at that
    parameter's MAP.
    """
    schedule = schedule or problem.card.schedule
    spec = get_model(model)
    # A model that integrates latents out (``collapsed``; learned-noise: sigma_pixel) is maximised
    # over w alone: the mode of p(w | y). The joint mode with a latent noise level is degenerate:
    # sigma_pixel shrinks onto the fit's own residual, which pulls w into fitting noise.
    model = spec.inferred
    G = problem.generator
    pyro.set_rng_seed(seed)
    with frozen(G):
        latents, losses = _best_of_starts(model, problem, schedule, seed, progress)
        w = latents.pop("w")
        forward = spec.corruption(problem.forward, latents) if spec.infers_corruption else problem.forward
        with torch.no_grad():
            image = to_unit(G.synthesis(w), clamp=True)
            y_rec = forward(image)
    return ReconstructionResult(
        image=image.cpu(),
        w=w.cpu(),
        y=problem.y.cpu(),
        y_reconstructed=y_rec.cpu(),
        observed=problem.observed.cpu(),
        losses=losses,
        data_consistency=data_consistency(y_rec, problem.y, problem.observed),
        params=problem.params,
        schedule=schedule,
        settings={
            "perceptual": type(problem.perceptual).__name__ if problem.perceptual is not None else None,
            "seed": seed,
            "generator": getattr(G, "name", None) or G.config,
        },
        latents={name: value.cpu() for name, value in latents.items()},
    )
