"""Mode search, the start of every inference: the images G's own prior knows that explain y, refined.

The posterior p(w | y) of a sharp prior has many modes, and the MAP from one start (w_avg) lands in
one of them, often the wrong garment. The search looks at the prior first:

1. a bank of N draws of G's prior, z ~ N(0, I), w = mapping(z), with their images
   (``bank.PriorBank``: computed once per prior, cached on disk, read a slice at a time);
2. per image, the draws ranked by the model's likelihood of y, and the K best that are not
   near-duplicates of each other (``candidates.find_candidates``), plus the prior's average;
3. the K starts refined by the MAP together, one batch of K x B images through the model's plate
   (``inference.map.run_map``), each ending at a mode: its latents, its image and its log posterior
   density.

    modes = search_modes(problem, spec, schedule, SearchSettings())
    modes.best            (B,) the mode of highest posterior density per image (what bp.reconstruct returns)
    modes.log_joint       (K, B) log p(latents_k, y), the density each mode reached

``SearchSettings`` holds N, K, the screen and the distance between starts; ``search=None`` in the
API gives back the single start from the prior's average.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

from brgm_pyro.errors import InputError
from brgm_pyro.inference.map import MAPSchedule, run_map
from brgm_pyro.models.protocol import BRGMModel
from brgm_pyro.problem import Problem
from brgm_pyro.search.bank import PriorBank, default_bank_size
from brgm_pyro.search.candidates import Candidates, find_candidates

__all__ = ["Modes", "SearchSettings", "average_start", "default_bank_size", "search_modes"]


@dataclass(frozen=True)
class SearchSettings:
    """How the mode search runs.

    Attributes:
        bank_size: N, draws of G's prior in the bank (None: ``$BRGM_BANK_SIZE``, else ``bank.DEFAULT_SIZE``).
        modes: K, starting points refined per image (the prior's average among them with ``average``).
        screen: draws per image whose model likelihood is evaluated after the RSS screen.
        min_distance: the smallest RMS distance (pixels in [0, 1]) between two starting points' images.
        average: whether the prior's average (w_avg; z = 0 for the mapping model) is one of the K starts.
        steps: MAP steps of the refinement (None: the MAP schedule's).
        prune_at: the fraction of the refinement's steps after which each image goes on from its best
            mode alone, with Adam's state carried over, so that mode's path is the one it would have
            taken in the whole run (None: every mode is refined to the end). The MAP needs the best
            mode only; the posterior (``bp.sample_posterior``) refines every mode to the end whatever
            this says. At 0.4 the MAP matched the whole refinement on 16-24 validation images per
            task (x8, x4, the seven masks) at 0.72-0.77 of its time (docs/results/mode_search.md).
    """

    bank_size: int | None = None
    modes: int = 4
    screen: int = 256
    min_distance: float = 0.05
    average: bool = True
    steps: int | None = None
    prune_at: float | None = 0.4

    def __post_init__(self) -> None:
        for name in ("bank_size", "modes", "screen"):
            value = getattr(self, name)
            if name == "bank_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"The search's {name} must be a positive integer, got {value!r}.")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise InputError(f"The search's steps must be a positive integer or None, got {self.steps!r}.")
        if self.prune_at is not None and (isinstance(self.prune_at, bool) or not isinstance(self.prune_at, (int, float))
                                          or not 0 < self.prune_at <= 1):
            raise InputError(f"The search's prune_at must be a fraction in (0, 1] of the refinement's steps or None, "
                             f"got {self.prune_at!r}.")
        if not (self.min_distance >= 0 and math.isfinite(self.min_distance)):
            raise InputError(f"The search's min_distance must be a non-negative number, got {self.min_distance!r}.")
        if self.modes == 1 and self.average:
            raise InputError("A search with modes=1 and average=True is the single start: pass search=None instead.")


@dataclass
class Modes:
    """The modes the search found for a batch of B images, K per image, K-major.

    Attributes:
        latents: site -> (K, B, ...) the refined latents of the model the inference runs on.
        log_joint: (K, B) log p(latents, y) (up to a constant) at the end of the refinement.
        log_likelihood_start: (K, B) the model's log-likelihood of y at the starting point.
        bank_index: (K, B) the bank row each mode started from, -1 for the prior's average.
        losses: term -> (steps + 1, K, B), the refinement's -log p terms (NaN after the step where a
            pruned mode stopped).
        seconds: wall time of the bank, the ranking and the refinement.
        refined: (K, B) whether the mode was refined to the end (False: pruned, ``prune_at``); None: all were.
    """

    latents: dict[str, torch.Tensor]
    log_joint: torch.Tensor
    log_likelihood_start: torch.Tensor
    bank_index: torch.Tensor
    losses: dict[str, torch.Tensor]
    seconds: dict[str, float] = field(default_factory=dict)
    refined: torch.Tensor | None = None

    @property
    def best(self) -> torch.Tensor:
        """(B,) the index of each image's mode of highest posterior density among those refined to the end."""
        if self.refined is None:
            return self.log_joint.argmax(dim=0)
        return self.log_joint.masked_fill(~self.refined, float("-inf")).argmax(dim=0)

    @property
    def count(self) -> int:
        """K, the modes per image."""
        return self.log_joint.shape[0]

    def select(self, index: int) -> Modes:
        """The modes of image ``index`` alone, (K, 1, ...)."""
        one = slice(index, index + 1)
        return Modes(
            latents={name: value[:, one] for name, value in self.latents.items()},
            log_joint=self.log_joint[:, one], log_likelihood_start=self.log_likelihood_start[:, one],
            bank_index=self.bank_index[:, one], losses={name: value[:, :, one] for name, value in self.losses.items()},
            seconds=self.seconds, refined=None if self.refined is None else self.refined[:, one],
        )

    def pick(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The latents of mode ``index[b]`` of each image b: site -> (B, ...)."""
        batch = torch.arange(index.shape[0])
        return {name: value[index, batch] for name, value in self.latents.items()}


def average_start(spec: BRGMModel, problem: Problem) -> dict[str, torch.Tensor]:
    """The model's latents at the prior's average, per image: w = w_avg on every layer (z = 0 for the mapping model)."""
    G, batch = problem.generator, problem.y.shape[0]
    z = torch.zeros(batch, getattr(G, "z_dim", 1), device=G.w_avg.device)
    return spec.start(z, G.w_avg.expand(batch, G.w_dim), G)


def search_modes(
    problem: Problem, spec: BRGMModel, schedule: MAPSchedule, settings: SearchSettings, progress: bool = False,
    bank: PriorBank | None = None,
) -> Modes:
    """The modes of the posterior of ``spec`` for the batch of ``problem`` (module notes)."""
    G, batch = problem.generator, problem.y.shape[0]
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    if bank is None:
        bank = PriorBank.load_or_build(G, settings.bank_size or default_bank_size(), progress=progress)
    seconds["bank_s"] = time.perf_counter() - began
    from_bank = settings.modes - int(settings.average)
    began = time.perf_counter()
    if from_bank > 0:
        found = find_candidates(spec, problem, bank, from_bank, settings.screen, settings.min_distance)
    else:
        found = Candidates(torch.zeros(0, batch, dtype=torch.long), torch.zeros(0, batch), {})
    seconds["rank_s"] = time.perf_counter() - began
    starts = found.latents
    index, start_likelihood = found.index, found.log_likelihood
    if settings.average:
        average = average_start(spec, problem)
        starts = {name: torch.cat([average[name], starts[name]]) if name in starts else average[name]
                  for name in average}
        index = torch.cat([torch.full((1, batch), -1, dtype=torch.long), index])
        start_likelihood = torch.cat([torch.full((1, batch), float("nan")), start_likelihood])
    k = index.shape[0]
    refine = schedule if settings.steps is None else replace(schedule, steps=settings.steps)
    began = time.perf_counter()
    prune = None if settings.prune_at is None else max(1, round(settings.prune_at * refine.steps))
    prune = prune if prune is not None and prune < refine.steps else None
    adam: dict[str, dict[str, torch.Tensor]] = {}
    latents, losses = run_map(spec.inferred, (), problem.tile(k).model_kwargs(), starts, refine, progress=progress,
                              segment=None if prune is None else (0, prune), adam_state=adam)
    latents = {name: value.reshape(k, batch, *value.shape[1:]) for name, value in latents.items()}
    losses = {name: value.reshape(value.shape[0], k, batch) for name, value in losses.items()}
    refined, log_joint = None, -losses["total"][-1]
    if prune is not None:
        latents, losses, log_joint, refined = _go_on_from_the_best(problem, spec, refine, prune, latents, losses, adam,
                                                                   progress)
    seconds["refine_s"] = time.perf_counter() - began
    return Modes(
        latents=latents,
        log_joint=log_joint,
        log_likelihood_start=start_likelihood,
        bank_index=index,
        losses=losses,
        seconds=seconds,
        refined=refined,
    )


def _go_on_from_the_best(
    problem: Problem, spec: BRGMModel, schedule: MAPSchedule, prune: int, latents: dict[str, torch.Tensor],
    losses: dict[str, torch.Tensor], adam: dict[str, dict[str, torch.Tensor]], progress: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The rest of the refinement (steps prune, ..., end) for each image's best mode at step ``prune``, with
    Adam's state of that mode: latents (K, B, ...) with the kept mode's replaced, the loss trace
    (steps + 1, K, B) with NaN where a mode stopped, log p(latents, y) (K, B) where each mode stopped,
    and (K, B) which modes went to the end."""
    k, batch = losses["total"].shape[1:]
    best = (-losses["total"][-1]).argmax(dim=0)
    images = torch.arange(batch)

    def kept(value: torch.Tensor) -> torch.Tensor:
        return value.reshape(k, batch, *value.shape[1:])[best, images] if value.dim() > 0 else value

    state = {name: {key: kept(value) for key, value in sites.items()} for name, sites in adam.items()}
    start = {name: value[best, images] for name, value in latents.items()}
    rest, rest_losses = run_map(spec.inferred, (), problem.model_kwargs(), start, schedule, progress=progress,
                                segment=(prune, schedule.steps), adam_state=state)
    latents = {name: value.clone() for name, value in latents.items()}
    for name, value in rest.items():
        latents[name][best, images] = value
    joined = {}
    for name, value in losses.items():
        trace = torch.full((schedule.steps + 1, k, batch), float("nan"), dtype=value.dtype)
        trace[: prune + 1] = value
        trace[prune:, best, images] = rest_losses[name]
        joined[name] = trace
    log_joint = -losses["total"][-1].clone()
    log_joint[best, images] = -rest_losses["total"][-1]
    refined = torch.zeros(k, batch, dtype=torch.bool)
    refined[best, images] = True
    return latents, joined, log_joint, refined
