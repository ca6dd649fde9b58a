"""The draws of the prior bank that explain y best, per image, and not near-duplicates of each other.

Two stages, each exact for what it ranks:

1. **Screen** all N draws by the residual sum of squares of f(x_n) against y on the observed
   outputs: the order of the pixel likelihood for isotropic noise (any sigma_pixel). The
   ``screen`` best per image go on. A prior larger than its bank's images is screened at the
   bank's resolution (``coarse_problem``: a Downsample at the factor that maps the bank's images
   onto y, a Mask pooled onto the bank's grid keeping the fully observed cells).
2. **Rank** those by the model's own likelihood of y (its sites ``protocol.LIKELIHOOD_SITES``: the
   pixel term, the reach, the perceptual term, each as the model defines them) at the draw's latents
   (``BRGMModel.start``), its other latents at their prior median. The draws come from G's prior,
   so this likelihood is their importance weight.

The ``keep`` best are then chosen greedily down that ranking, each at a root-mean-square distance of
at least ``min_distance`` (in [0, 1] pixel units, on the bank's images) from those chosen before, so
that the K starting points are K different images, not one image K times.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.forward import Downsample, Identity, Mask, Operator
from brgm_pyro.inference.params import init_to_prior_median
from brgm_pyro.models.protocol import LIKELIHOOD_SITES, BRGMModel
from brgm_pyro.problem import Problem
from brgm_pyro.search.bank import PriorBank

__all__ = ["Candidates", "coarse_problem", "find_candidates", "likelihood"]

CHUNK = 4096
"""Bank rows screened at a time."""
RANK_CHUNK = 64
"""Candidates whose model likelihood is evaluated in one batch (per image)."""


@dataclass(frozen=True)
class Candidates:
    """The starting points of the search for a batch of B images.

    Attributes:
        index: (K, B) bank rows, best first per image.
        log_likelihood: (K, B) the model's log-likelihood of y at each.
        latents: site -> (K B, ...) the model's latents at each, K-major (row k B + b: image b's k-th).
    """

    index: torch.Tensor
    log_likelihood: torch.Tensor
    latents: dict[str, torch.Tensor]


def coarse_problem(f: nn.Module, y: torch.Tensor, size: int, resolution: int) -> tuple[Operator, torch.Tensor] | None:
    """(f_c, y_c): an operator on the bank's ``resolution`` px images and the y it is compared with, for a
    prior of ``size`` px, or None where there is none. Exact for what a Downsample keeps when y is no
    larger than the bank's images; a mask keeps the bank's cells it observes entirely."""
    scale = size // resolution
    if scale == 1:
        return f, y
    if isinstance(f, Identity):
        return Identity(), F.avg_pool2d(y, scale)
    if isinstance(f, Downsample) and f.kernel_name is not None:
        if f.factor % scale == 0:
            return Downsample(f.factor // scale, f.kernel_name, f.sigma if f.kernel_name == "gaussian" else None), y
        if scale % f.factor == 0:
            return Identity(), F.avg_pool2d(y, scale // f.factor)
    if isinstance(f, Mask):
        mask = f.observed((y.shape[0], y.shape[1], size, size), device=y.device, dtype=y.dtype)
        kept = (F.avg_pool2d(mask, scale) > 1 - 1e-6).to(y.dtype)
        if not bool(kept.any()):
            return None
        return Mask(kept), F.avg_pool2d(y * mask, scale) * kept
    return None


def _screen(bank: PriorBank, f: nn.Module, y: torch.Tensor, observed: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` bank rows of smallest RSS of f(x_n) against y on the observed outputs, per image: (count, B)."""
    batch = y.shape[0]
    per_image = isinstance(f, Operator) and f.per_image
    best_rss, best_index = None, None
    observed = observed.to(y)
    with torch.no_grad():
        for start, _, _, images in bank.chunks(CHUNK):
            images = images.to(y.device)
            n = images.shape[0]
            if per_image:  # each image's own f: the bank rows tiled over the batch, row-major
                x = images[:, None].expand(n, batch, *images.shape[1:]).reshape(n * batch, *images.shape[1:])
                fx = f.tile(n)(x).reshape(n, batch, *y.shape[1:])
            else:
                fx = f(images)[:, None]
            rss = ((fx - y[None]).square() * observed[None]).flatten(2).sum(-1)  # (n, B)
            index = torch.arange(start, start + n, device=y.device)[:, None].expand(n, batch)
            if best_rss is not None:
                rss, index = torch.cat([best_rss, rss]), torch.cat([best_index, index])
            keep = min(count, rss.shape[0])
            best_rss, order = rss.topk(keep, dim=0, largest=False)
            best_index = index.gather(0, order)
    return best_index.cpu()


def likelihood(spec: BRGMModel, problem: Problem, latents: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p(y | latents) per image, (B,): the sum of the ``LIKELIHOOD_SITES`` of the model the inference
    runs on (``spec.inferred``: with sigma_pixel integrated out where the model allows it), at the latents
    given (each (B, ...)) and the model's other latents at their prior median."""
    kwargs = problem.model_kwargs()
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(poutine.condition(spec.inferred, data=latents)).get_trace(**kwargs)
        medians = {name: init_to_prior_median(site) for name, site in trace.nodes.items()
                   if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
                   and name not in latents}
        if medians:
            trace = poutine.trace(poutine.condition(spec.inferred, data={**latents, **medians})).get_trace(**kwargs)
        trace.compute_log_prob()
    terms = [trace.nodes[name]["log_prob"] for name in LIKELIHOOD_SITES if name in trace.nodes]
    if not terms:
        raise InputError(
            f"The model {spec.name} has none of the sites {', '.join(LIKELIHOOD_SITES)} that hold the likelihood of y; "
            "observe y at the site 'y' as brgm.model does, or pass search=False."
        )
    return sum(terms)


def _rank(spec: BRGMModel, problem: Problem, bank: PriorBank, index: torch.Tensor) -> torch.Tensor:
    """The model's log-likelihood of y at each bank row ``index`` (M, B): (M, B)."""
    G = problem.generator
    batch = index.shape[1]
    out = []
    for chunk in index.split(RANK_CHUNK):
        z, w, _ = bank.rows(chunk)  # (m, B, ...)
        m = chunk.shape[0]
        latents = _starts(spec, z, w, G, problem.y.device)
        out.append(likelihood(spec, problem.tile(m), latents).reshape(m, batch).cpu())
    return torch.cat(out)


def _starts(spec, z: torch.Tensor, w: torch.Tensor, G: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """The model's starting latents for bank rows (m, B, ...) of z and w, flattened to m B starts on G's
    device and in G's dtype."""
    dtype = G.w_avg.dtype
    return spec.start(z.flatten(0, 1).to(device, dtype), w.flatten(0, 1).to(device, dtype), G)


def _diverse(images: torch.Tensor, order: torch.Tensor, keep: int, min_distance: float) -> list[int]:
    """Positions in ``order`` of up to ``keep`` images (M, C, r, r), best first, each at RMS distance
    at least ``min_distance`` from those chosen before; filled with the next best if too few are apart."""
    chosen: list[int] = []
    for position in order.tolist():
        if len(chosen) == keep:
            break
        if all((images[position] - images[other]).square().mean().sqrt() >= min_distance for other in chosen):
            chosen.append(position)
    for position in order.tolist():  # too few far enough apart: the best of the rest
        if len(chosen) == keep:
            break
        if position not in chosen:
            chosen.append(position)
    return chosen


def find_candidates(spec: BRGMModel, problem: Problem, bank: PriorBank, keep: int, screen: int,
                    min_distance: float) -> Candidates:
    """The ``keep`` starting points per image (module notes): screen the bank, rank ``screen`` draws by the
    model's likelihood, choose ``keep`` far enough apart."""
    G = problem.generator
    bank.check(G)
    y = problem.y
    coarse = coarse_problem(problem.forward, y, G.resolution, bank.resolution)
    if coarse is None:
        raise InputError(
            f"The mode search screens a {G.resolution} px prior's draws at {bank.resolution} px, which it can do for "
            f"a Mask, a Downsample with a named kernel or no corruption, not {type(problem.forward).__name__}; pass "
            "search=False for a single start."
        )
    f_coarse, y_coarse = coarse
    if f_coarse is problem.forward:
        observed = problem.observed
    else:
        observed = f_coarse.observed((y.shape[0], G.channels, bank.resolution, bank.resolution), device=y.device)
    screened = _screen(bank, f_coarse, y_coarse, observed, max(screen, keep))
    scores = _rank(spec, problem, bank, screened)  # (M, B)
    order = scores.argsort(dim=0, descending=True)
    rows, log_likelihood = [], []
    for b in range(y.shape[0]):
        _, _, images = bank.rows(screened[:, b])
        positions = _diverse(images[order[:, b]], torch.arange(len(order)), keep, min_distance)
        chosen = order[positions, b]
        rows.append(screened[chosen, b])
        log_likelihood.append(scores[chosen, b])
    index = torch.stack(rows, dim=1)  # (K, B)
    z, w, _ = bank.rows(index)
    latents = _starts(spec, z, w, G, y.device)
    return Candidates(index=index, log_likelihood=torch.stack(log_likelihood, dim=1), latents=latents)
