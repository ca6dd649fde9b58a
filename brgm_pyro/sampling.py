"""Posterior sampling, ``sample_posterior``: the modes the search found, a local posterior at each, weighted.

    post = sample_posterior(y, f, G, num_samples=16)
    post.samples          (S, B, C, H, W) posterior predictive draws of the clean images, in [0, 1]
    post.generator_samples  the images G(w) of the same draws of w (the plausible reconstructions)
    post.mean, post.std   (B, C, H, W) per-pixel posterior mean (the MMSE estimate) and standard deviation,
                          over every mode: the spread between modes included
    post.modes            each mode's image, weight and log evidence
    post.interval(0.9)    per-pixel central 90% credible interval (lower, upper)
    post.inference_data   ArviZ InferenceData: w summaries, a latent sigma_pixel, MCMC sample stats

The default method, "laplace", is the mixture of ``inference.mixture``: the mode search of the MAP
(``brgm_pyro.search``) gives K modes per image; each gets a Laplace approximation and the weight of
its Laplace evidence, and the S draws are spread over the modes by weight. "svi", "nuts" and "hmc"
run the existing guides and samplers from the mode of highest density. The posterior is the one of
the model (``models.variants.choose`` for "auto"). The images G(w) of the draws come through
``pyro.infer.Predictive`` in chunks; with the prior's reach each draw's predictive image is G(w)
plus the reach residual conditioned on y (``uncertainty.discrepancy.predictive_images``), so the
intervals are about clean images, not about G(w) alone.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import Predictive
from torch import nn

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.inference.diagnostics import inference_data, mcmc_diagnostics
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.inference.mcmc import MCMCSettings, run_mcmc
from brgm_pyro.inference.mixture import allocate, fit_mode_svi, fit_modes, merge_duplicates
from brgm_pyro.inference.svi import SVISettings, choose_guide, draw_latents, run_svi
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.models.protocol import BRGMModel, Collapsed, check_model
from brgm_pyro.models.variants import choose
from brgm_pyro.posterior import Posterior, PosteriorModes
from brgm_pyro.problem import Problem, frozen, prepare_problem
from brgm_pyro.reconstruct import DEFAULT_SEARCH, ReconstructionResult, map_reconstruction
from brgm_pyro.search import SearchSettings
from brgm_pyro.uncertainty.conformal import Calibration, fingerprint, load_calibrations
from brgm_pyro.uncertainty.discrepancy import predictive_images, reach_mean
from brgm_pyro.uncertainty.leverage import unpinned_pixels

__all__ = ["DEFAULT_MODEL", "METHODS", "posterior_model", "predict_images", "sample_posterior"]

METHODS = ("laplace", "svi", "nuts", "hmc")
DEFAULT_MODEL = "auto"
"""The model ``sample_posterior`` and ``brgm sample`` use unless told otherwise: "reach" where the
prior has a reach (its card's ``sigma_reach``, or the caller's) and f carries its structure, else
"learned-noise" (``models.variants.choose``)."""


def sample_posterior(
    y: torch.Tensor,
    f: nn.Module,
    G: nn.Module,
    method: str = "laplace",
    num_samples: int = 16,
    *,
    model: str | Callable | BRGMModel | None = DEFAULT_MODEL,
    params: BRGMParams | str | None = None,
    perceptual: str | nn.Module | None = "auto",
    map_result: ReconstructionResult | None = None,
    map_schedule: MAPSchedule | None = None,
    search: SearchSettings | None = DEFAULT_SEARCH,
    settings: SVISettings | MCMCSettings | None = None,
    sigma_reach: float | str | None = "auto",
    calibration: Calibration | str | Path | None = "auto",
    chunk_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> Posterior:
    """Posterior draws of the clean images behind the corrupted images y (B, C, h, w).

    The data flow one way: the settings resolved, the problem prepared (``brgm_pyro.problem``:
    checks, phi(y), the prior's card), the model and reach chosen (``models.variants.choose``), the
    mode search and the MAP (``reconstruct.map_reconstruction``) unless ``map_result`` is given, the
    local posteriors (a Laplace approximation at each mode, ``inference.mixture``, or SVI or MCMC from
    the best, ``brgm_pyro.inference``), the images G(w) of the draws (``pyro.infer.Predictive``), the
    reach residual added (``uncertainty.discrepancy.predictive_images``), the diagnostics, the
    calibration, and the ``Posterior``, built once.

    Args:
        y, f, G, params, perceptual: as for :func:`brgm_pyro.reconstruct`.
        method: "laplace" (the mixture of Laplace approximations at the modes the search found, each
            weighted by its evidence, :mod:`brgm_pyro.inference.mixture`), "svi" (a Gaussian guide
            fitted by SVI, :mod:`brgm_pyro.inference.svi`), "nuts" or "hmc"
            (:mod:`brgm_pyro.inference.mcmc`), these three from the mode of highest density.
        num_samples: draws of the mixture or of the fitted guide, or kept draws per chain (MCMC, which
            returns ``num_chains * num_samples`` draws, as Pyro's MCMC does).
        model: a registered model name ("reach", "learned-noise", "brgm", "heavy-tail",
            "no-colinear", "unknown-blur"), "auto", a :class:`~brgm_pyro.models.protocol.BRGMModel`
            or a Pyro model with the signature of ``brgm.model`` (None: ``brgm.model``). The
            default, "auto", is "reach" for a prior with a reach (the card's ``sigma_reach``, or the
            ``sigma_reach`` given) and an f that carries its structure (a linear
            ``brgm_pyro.forward.Operator``): the reach residual in the likelihood and sigma_pixel
            inferred per image, so that a w whose G(w) misses y by the prior's reach stays plausible
            (docs/results/calibration.md). Otherwise "learned-noise", with a note in
            ``post.notes`` where a reach was left out. "brgm" is the paper's model with the fixed
            sigma_pixel, whose intervals are far too narrow on real images.
        map_result: a MAP reconstruction of this y to start from (skips the search and the MAP; its
            ``modes`` are the mixture's).
        map_schedule: the MAP's Adam schedule (default: the prior card's, else ``MAPSchedule()``).
        search: the mode search (:class:`~brgm_pyro.search.SearchSettings`); None for today's single
            start from the prior's average (one mode).
        settings: :class:`~brgm_pyro.inference.svi.SVISettings` or
            :class:`~brgm_pyro.inference.mcmc.MCMCSettings`; ``options`` override single fields,
            e.g. ``guide="normal"``, ``rank=32``, ``steps=1000`` (SVI) or ``num_chains=4``,
            ``warmup_steps=200``, ``max_tree_depth=8`` (MCMC).
        sigma_reach: std of the prior's reach residual per clean pixel (``brgm_pyro.uncertainty.discrepancy``):
            "auto" takes the prior card's ``sigma_reach`` (off for priors without one, for a model that
            infers f and for an f without structure), None or 0 turns the term off, a positive number
            sets it (it needs a linear operator f).
        calibration: the calibration of the intervals (``brgm_pyro.uncertainty.conformal``) that
            ``post.interval`` and ``post.error_radius`` use by default: "auto" takes the prior card's
            for this task when it holds for this posterior (same prior, procedure and at least as many
            draws; otherwise the posterior's own intervals, and ``post.calibration_note`` says why),
            None none, a :class:`~brgm_pyro.uncertainty.conformal.Calibration` or the path of a file
            written by ``brgm calibrate`` one that must hold (else InputError).
        chunk_size: draws per Predictive call when computing the images.
        seed: seed of Pyro and torch for this run.
        progress: show progress bars.
    """
    settings = _resolve_settings(method, num_samples, chunk_size, settings, options)
    spec, problem, sigma_reach, notes = posterior_model(model, sigma_reach, prepare_problem(y, f, G, params, perceptual))
    latents = _check(spec, problem)
    timings: dict[str, float] = {}
    if map_result is None:
        with _timed(timings, "map_s"):
            # The mixture needs every mode refined to the end, which a pruned search does not do.
            every_mode = None if search is None else replace(search, prune_at=None)
            map_result = map_reconstruction(problem, map_schedule, spec, seed, progress, every_mode, sigma_reach)
    else:
        _check_map_result(map_result, problem)
    kwargs = problem.model_kwargs()
    with frozen(problem.generator):
        with _timed(timings, "inference_s"):
            if method in ("laplace", "svi"):
                inference, modes = _mixture(spec, problem, map_result, sigma_reach, num_samples, seed, settings)
            else:
                inference = _infer(method, spec.inferred, kwargs, _initial_values(latents, map_result, problem.y.device),
                                   settings, num_samples, seed, progress)
                modes = _best_mode(map_result)
        with _timed(timings, "images_s"):
            images, deterministic = predict_images(spec.inferred, kwargs, inference.draws, chunk_size, clamp=False,
                                                   sites=("w",))
            draws = {**inference.draws, **deterministic,
                     **_complete(spec.collapsed, images, kwargs, inference.num_chains, seed)}
            images = images.clamp(0.0, 1.0)
        predictive = conditional_means = images
        if sigma_reach is not None:
            with _timed(timings, "reach_s"):
                noise = draws["sigma_pixel"] if "sigma_pixel" in draws else problem.params.sigma_pixel
                predictive = predictive_images(images, problem.y, problem.forward, sigma_reach, noise, chunk_size, seed)
                conditional_means = predictive_images(images, problem.y, problem.forward, sigma_reach, noise,
                                                      chunk_size, seed, mean=True)
    record = _settings_record(problem, spec, inference.settings, map_result, method, seed, chunk_size, sigma_reach)
    G = problem.generator
    diagnostics = {**inference.diagnostics, **timings}
    draws = {name: value.detach().cpu() for name, value in draws.items()}
    if method in ("nuts", "hmc"):
        data = inference_data(draws, inference.num_chains, G.w_avg.detach().cpu(), G.w_std.detach().cpu(),
                              problem.y.cpu(), inference.sample_stats)
        diagnostics.update(mcmc_diagnostics(data, inference.sample_stats, diagnostics["chain_seconds"],
                                            inference.settings.max_tree_depth))
    task = getattr(problem.forward, "task", None)
    clean_shape = (problem.y.shape[0], G.channels, G.resolution, G.resolution)
    unpinned = unpinned_pixels(problem.forward, clean_shape).cpu().expand(clean_shape) if task is not None else None
    chosen, note = _calibration(calibration, task, problem, record, predictive.shape[0])
    return Posterior(
        samples=predictive,
        generator_samples=images,
        conditional_means=conditional_means,
        sigma_reach=sigma_reach,
        latents=draws,
        num_chains=inference.num_chains,
        method=method,
        map=map_result,
        y=problem.y.cpu(),
        observed=problem.observed.cpu(),
        w_avg=G.w_avg.detach().cpu(),
        w_std=G.w_std.detach().cpu(),
        sample_stats=inference.sample_stats,
        loss_trace=inference.loss_trace,
        diagnostics=diagnostics,
        settings=record,
        task=task,
        unpinned=unpinned,
        calibration=chosen,
        calibration_note=note,
        notes=(*notes, *map_result.notes),
        modes=modes,
    )


def _mode_latents(map_result: ReconstructionResult, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The latents of every mode of the MAP's search, site -> (K, B, ...), and their log densities (K, B);
    one mode (the MAP itself) without a search, or where the search refined only the best to the end
    (``SearchSettings.prune_at``)."""
    modes = map_result.modes
    if modes is not None and modes.refined is not None and not bool(modes.refined.all()):
        best = modes.best
        latents = {name: value[None].to(device) for name, value in modes.pick(best).items()}
        return latents, modes.log_joint[best, torch.arange(best.shape[0])][None]
    if modes is not None:
        latents = {name: value.to(device) for name, value in map_result.modes.latents.items()}
        return latents, map_result.modes.log_joint
    latents = {"w": map_result.w, **map_result.latents}
    return {name: value[None].to(device) for name, value in latents.items()}, -map_result.losses["total"][-1][None]


def _mixture(spec: BRGMModel, problem: Problem, map_result: ReconstructionResult, sigma_reach: float | None,
             num_samples: int, seed: int, settings: SVISettings | None) -> tuple[_Inference, PosteriorModes]:
    """The mixture of local posteriors at the modes (``inference.mixture``), image by image: a Laplace
    approximation at each (``settings`` None) or SVI's guide, each weighted by its evidence; draws
    site -> (S, B, ...) and the modes' images, weights and log evidences."""
    device = problem.y.device
    mode_latents, log_joint = _mode_latents(map_result, device)
    count, batch = log_joint.shape
    generator = torch.Generator().manual_seed(20_011 + seed)
    weights = torch.zeros(count, batch)
    log_evidence = torch.full((count, batch), -math.inf)
    images = torch.zeros(count, batch, *map_result.image.shape[1:])
    per_image: list[dict[str, torch.Tensor]] = []
    seconds = 0.0
    resolved = settings
    traces: list[torch.Tensor] = []
    for b in range(batch):
        one = problem.select(b)
        latents_k = [{name: value[k, b : b + 1] for name, value in mode_latents.items()} for k in range(count)]
        estimates = torch.cat([_estimate(spec, one, latents, sigma_reach) for latents in latents_k])
        images[:, b] = estimates
        kept = merge_duplicates(estimates, log_joint[:, b])
        began = time.perf_counter()
        if settings is None:  # every mode's Hessian from one set of Hessian-vector products
            stacked = {name: torch.cat([latents_k[k][name] for k in kept]) for name in latents_k[0]}
            fits = dict(zip(kept, fit_modes(spec.inferred, one.tile(len(kept)).model_kwargs(), stacked)))
        else:
            fits = {k: fit_mode_svi(spec.inferred, one.model_kwargs(), latents_k[k], settings, seed + k) for k in kept}
            resolved = fits[kept[0]].settings  # "auto" resolved for one image
            traces.extend(fits[k].loss_trace for k in kept)
        seconds += time.perf_counter() - began
        evidence = torch.tensor([fits[k].log_evidence for k in kept], dtype=torch.float64)
        log_evidence[kept, b] = evidence.float()
        weights[kept, b] = torch.softmax(evidence, 0).float()
        counts = allocate(weights[kept, b], num_samples, generator)
        parts = [fits[k].draw(int(n), generator) for k, n in zip(kept, counts.tolist()) if n > 0]
        per_image.append({name: torch.cat([part[name] for part in parts]) for name in parts[0]})
    draws = {name: torch.cat([image[name] for image in per_image], dim=1) for name in per_image[0]}
    inference = _Inference(draws, resolved, loss_trace=torch.stack(traces) if traces else None,
                           diagnostics={"local_posteriors_s": seconds, "modes": count})
    return inference, PosteriorModes(images=images, weights=weights, log_evidence=log_evidence,
                                     log_joint=log_joint.float().cpu())


def _estimate(spec: BRGMModel, problem: Problem, latents: dict[str, torch.Tensor], sigma_reach: float | None) -> torch.Tensor:
    """G(w) + E[r | y, w] at the latents (one image), clamped to [0, 1], on the CPU."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(poutine.condition(spec.inferred, data=latents)).get_trace(**problem.model_kwargs())
        image = trace.nodes["image"]["value"]
        if sigma_reach is not None:
            noise = latents["sigma_pixel"] if "sigma_pixel" in latents else problem.params.sigma_pixel
            image = image + reach_mean(problem.y - problem.forward(image), problem.forward, sigma_reach, noise)
    return image.clamp(0.0, 1.0).cpu()


def _best_mode(map_result: ReconstructionResult) -> PosteriorModes:
    """The mode SVI and MCMC run from: the MAP, weight 1."""
    batch = map_result.image.shape[0]
    return PosteriorModes(images=map_result.image[None], weights=torch.ones(1, batch),
                          log_evidence=torch.full((1, batch), math.nan),
                          log_joint=-map_result.losses["total"][-1][None].float())


def posterior_model(
    model: str | Callable | BRGMModel | None, sigma_reach: float | str | None, problem: Problem
) -> tuple[BRGMModel, Problem, float | None, tuple[str, ...]]:
    """What :func:`sample_posterior` runs for its ``model`` and ``sigma_reach`` arguments
    (``models.variants.choose``): the model, the problem with that reach in its params, the reach, and
    the notes about the choice."""
    G = problem.generator
    clean_shape = (problem.y.shape[0], G.channels, G.resolution, G.resolution)
    spec, sigma_reach, notes = choose(model, sigma_reach, problem.forward, problem.card.sigma_reach, clean_shape,
                                      problem.y.device)
    # One value of the reach for the likelihood (models that have it there) and the predictive.
    problem = replace(problem, params=replace(problem.params, sigma_reach=sigma_reach or 0.0))
    return spec, problem, sigma_reach, notes


def _calibration(
    calibration: Calibration | str | Path | None, task: str | None, problem: Problem, record: dict[str, Any],
    num_samples: int,
) -> tuple[Calibration | None, str]:
    """The calibration the posterior's intervals use (see ``sample_posterior``) and the sentence saying which."""
    if calibration is None:
        return None, "The posterior's own intervals: calibration=None."
    explicit = not (isinstance(calibration, str) and calibration == "auto")
    if isinstance(calibration, (str, Path)) and explicit:
        found = load_calibrations(calibration)
        if task not in found:
            raise InputError(
                f"{calibration} holds calibrations for {', '.join(sorted(found)) or 'no task'}, not for this "
                f"posterior's task {task or '(not a calibrated kind)'}; calibrate this task with `brgm calibrate`."
            )
        calibration = found[task]
    elif not explicit:
        calibration = problem.card.calibrations.get(task) if task else None
        if calibration is None:
            return None, (f"The posterior's own intervals: the prior's card has no calibration for "
                          f"{task or 'this corruption'}.")
    elif not isinstance(calibration, Calibration):
        raise InputTypeError(
            f"calibration must be 'auto', None, a Calibration or the path of a calibration file, got "
            f"{type(calibration).__name__}."
        )
    reason = calibration.check(task, fingerprint(problem.generator), record, num_samples)
    if reason is not None:
        if explicit:
            raise InputError(f"This calibration does not hold for this posterior: {reason}; calibrate it with `brgm calibrate`.")
        return None, f"The posterior's own intervals: the card's calibration for {task} does not apply, {reason}."
    data = f" ({calibration.data})" if calibration.data else ""
    return calibration, f"Calibrated intervals: {task}, {calibration.images} validation images{data}."


def _settings_record(
    problem: Problem, spec: BRGMModel, inference: SVISettings | MCMCSettings | None, map_result: ReconstructionResult,
    method: str, seed: int, chunk_size: int, sigma_reach: float | None,
) -> dict[str, Any]:
    """Everything that defined the run, JSON-able (``Posterior.settings``; a calibration matches its
    ``conformal.procedure``)."""
    return {
        "method": method,
        "model": spec.name,
        "params": asdict(problem.params),
        "inference": asdict(inference) if inference is not None else {},
        "map_schedule": asdict(map_result.schedule),
        "search": map_result.settings.get("search"),
        "seed": seed,
        "chunk_size": chunk_size,
        "sigma_reach": sigma_reach,
        "perceptual": type(problem.perceptual).__name__ if problem.perceptual is not None else None,
    }


def _resolve_settings(
    method: str, num_samples: int, chunk_size: int, settings: Any, overrides: dict[str, Any]
) -> SVISettings | MCMCSettings:
    """The inference settings of ``method``: ``settings`` (or the defaults) with ``overrides`` applied."""
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; choose one of: {', '.join(METHODS)}.")
    for name, value in (("num_samples", num_samples), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")
    if method == "laplace":
        if settings is not None or overrides:
            raise InputTypeError(
                f"method='laplace' takes no settings (got {', '.join(sorted(overrides)) or type(settings).__name__}); "
                "the search's are passed as search=SearchSettings(...)."
            )
        return None
    kind = SVISettings if method == "svi" else MCMCSettings
    if settings is None:
        settings = kind() if method == "svi" else MCMCSettings(kernel=method)
    elif not isinstance(settings, kind):
        raise InputTypeError(f"method={method!r} takes settings of type {kind.__name__}, got {type(settings).__name__}.")
    allowed = {f.name for f in fields(kind)} - {"kernel"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise InputTypeError(
            f"Unknown option(s) {', '.join(unknown)} for method={method!r}; it takes: {', '.join(sorted(allowed))}."
        )
    if method != "svi":
        overrides = {**overrides, "kernel": method, "num_samples": num_samples}
    return replace(settings, **overrides)


def _check(spec: BRGMModel, problem: Problem) -> dict[str, torch.Size]:
    """The latent sites' shapes of the model the inference runs on, after checking the model and it."""
    kwargs = problem.model_kwargs()
    with frozen(problem.generator):
        latents = check_model(spec, kwargs)
        return latents if spec.collapsed is None else check_model(spec.inferred, kwargs)


def _check_map_result(map_result: Any, problem: Problem) -> None:
    G = problem.generator
    expected = (problem.y.shape[0], G.num_ws, G.w_dim)
    if not isinstance(map_result, ReconstructionResult):
        raise InputTypeError(f"map_result must be a ReconstructionResult, got {type(map_result).__name__}.")
    if tuple(map_result.w.shape) != expected:
        raise InputError(
            f"map_result holds w of shape {tuple(map_result.w.shape)}, but this problem needs "
            f"{expected}; pass the MAP of these images with this generator."
        )


def _initial_values(latents: dict[str, torch.Size], rec: ReconstructionResult, device: torch.device) -> dict:
    """Where the inference starts: the MAP of its latents (w or z, a blur width), and, for a latent noise
    level the MAP did not hold, the MAP's residual RMSE. Copies, as a guide may take them as its parameters
    and update them in place."""
    values = {name: value.detach().to(device, copy=True) for name, value in {"w": rec.w, **rec.latents}.items()
              if name in latents}
    if "sigma_pixel" in latents and "sigma_pixel" not in values:
        rmse = rec.data_consistency["rmse"].clamp_min(1e-3).to(device, copy=True)
        values["sigma_pixel"] = rmse.reshape(latents["sigma_pixel"])
    return values


@dataclass
class _Inference:
    """What SVI or MCMC gives: the draws of the latents (site -> (S, ...)) and how they were made."""

    draws: dict[str, torch.Tensor]
    settings: SVISettings | MCMCSettings | None
    num_chains: int = 1
    loss_trace: torch.Tensor | None = None
    sample_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)


def _infer(
    method: str, model: Callable, model_kwargs: dict, init_values: dict[str, torch.Tensor],
    settings: SVISettings | MCMCSettings, num_samples: int, seed: int, progress: bool,
) -> _Inference:
    """SVI (``num_samples`` draws of the fitted guide) or MCMC from ``init_values``, seeded by ``seed``."""
    pyro.set_rng_seed(seed)
    if method == "svi":
        settings = choose_guide(model, model_kwargs, init_values, settings)  # recorded with "auto" resolved
        guide, loss_trace = run_svi(model, model_kwargs, init_values, settings, progress=progress)
        diagnostics = {"final_loss": float(loss_trace[-10:].mean())}
        draws = draw_latents(guide, model_kwargs, num_samples)
        return _Inference(draws, settings, loss_trace=loss_trace, diagnostics=diagnostics)
    run = run_mcmc(model, model_kwargs, init_values, settings, seed=seed, progress=progress)
    diagnostics: dict[str, Any] = {"chain_seconds": run.seconds}
    if run.setup_seconds:
        diagnostics["precondition_s"] = run.setup_seconds
    diagnostics["acceptance_rate"] = run.acceptance_rate
    return _Inference(run.samples, settings, run.num_chains, sample_stats=run.sample_stats, diagnostics=diagnostics)


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of the block as ``timings[name]`` (seconds)."""
    began = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - began


@torch.no_grad()
def predict_images(
    model: Callable, model_kwargs: dict[str, Any], latents: dict[str, torch.Tensor], chunk_size: int,
    clamp: bool = True, sites: tuple[str, ...] = (),
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G(w) for each draw of the latents (site -> (S, ...)), through Predictive in chunks: (S, B, C, H, W) on the
    CPU, clamped to [0, 1] unless ``clamp=False``. With ``sites``, also those deterministic sites that are
    not among the latents (the mapping model's w), site -> (S, ...): (images, sites)."""
    num = next(iter(latents.values())).shape[0]
    wanted = [site for site in sites if site not in latents]
    chunks: list[dict[str, torch.Tensor]] = []
    for start in range(0, num, chunk_size):
        chunk = {name: value[start : start + chunk_size] for name, value in latents.items()}
        predictive = Predictive(model, posterior_samples=chunk, return_sites=["image", *wanted])
        chunks.append({name: value.cpu() for name, value in predictive(**model_kwargs).items()})
    images = torch.cat([chunk["image"] for chunk in chunks])
    images = images.clamp(0.0, 1.0) if clamp else images
    if not sites:
        return images
    return images, {site: torch.cat([chunk[site] for chunk in chunks]) for site in wanted}


def _complete(
    collapsed: Collapsed | None, images: torch.Tensor, model_kwargs: dict, num_chains: int, seed: int
) -> dict[str, torch.Tensor]:
    """The integrated-out latents of each draw from their conditional (none without ``collapsed``), chain by
    chain, each chain's draws seeded by its own seed (seed + k, as its sampler), so a chain run alone gets
    the same draws."""
    if collapsed is None:
        return {}
    device = model_kwargs["y"].device
    parts = []
    for chain, chunk in enumerate(images.chunk(num_chains)):
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed + chain)
            parts.append(collapsed.conditional(chunk, model_kwargs))
    return {name: torch.cat([part[name].cpu() for part in parts]) for name in parts[0]}
