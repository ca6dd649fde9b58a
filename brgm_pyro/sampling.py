"""Posterior sampling, ``sample_posterior``: SVI, NUTS or HMC from the MAP, giving a ``Posterior``.

    post = sample_posterior(y, f, G, method="svi", num_samples=16)
    post.samples          (S, B, C, H, W) posterior predictive draws of the clean images, in [0, 1]
    post.generator_samples  the images G(w) of the same draws of w (the plausible reconstructions)
    post.mean, post.std   (B, C, H, W) per-pixel posterior mean and standard deviation
    post.interval(0.9)    per-pixel central 90% credible interval (lower, upper)
    post.inference_data   ArviZ InferenceData: w summaries, a latent sigma_pixel, MCMC sample stats

The posterior is the one of the model (``brgm.model`` or a variant, see
``brgm_pyro.models.variants``): p(w | y) and, for the learned-noise variant, sigma_pixel. The
images G(w) are deterministic functions of the draws of w, computed through ``pyro.infer.Predictive``
in chunks so that memory stays bounded. When the prior's card gives ``sigma_reach`` (or the caller
does), each draw's predictive image is G(w) plus the prior's reach residual conditioned on y
(``brgm_pyro.uncertainty.discrepancy``): the posterior then also says where the prior itself cannot be
trusted, and its credible intervals are about clean images rather than about G(w) alone.

All images of one call share one posterior: with ``method="svi"`` and the "normal" guide that
changes nothing (the guide factorises over images), but a low-rank guide and the MCMC step size
and mass matrix are then shared by the batch, and the Laplace whitening of the "laplace" guide and
of NUTS costs B^2 times that of one image (the default guide, "auto", takes "normal" for a
batch). Pass one image per call for those (the ``brgm sample`` command and the calibration
benchmark do).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import Predictive
from torch import nn

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.inference.diagnostics import inference_data, mcmc_diagnostics
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.inference.mcmc import MCMCSettings, run_mcmc
from brgm_pyro.inference.svi import SVISettings, choose_guide, draw_latents, run_svi
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.models.protocol import BRGMModel, Collapsed, check_model
from brgm_pyro.models.variants import choose
from brgm_pyro.posterior import Posterior
from brgm_pyro.problem import Problem, frozen, prepare_problem
from brgm_pyro.reconstruct import ReconstructionResult, map_reconstruction
from brgm_pyro.uncertainty.conformal import Calibration, fingerprint, load_calibrations
from brgm_pyro.uncertainty.discrepancy import predictive_images
from brgm_pyro.uncertainty.leverage import unpinned_pixels

__all__ = ["DEFAULT_MODEL", "METHODS", "posterior_model", "predict_images", "sample_posterior"]

METHODS = ("svi", "nuts", "hmc")
DEFAULT_MODEL = "auto"
"""The model ``sample_posterior`` and ``brgm sample`` use unless told otherwise: "reach" where the
prior has a reach (its card's ``sigma_reach``, or the caller's) and f carries its structure, else
"learned-noise" (``models.variants.choose``)."""


def sample_posterior(
    y: torch.Tensor,
    f: nn.Module,
    G: nn.Module,
    method: str = "svi",
    num_samples: int = 16,
    *,
    model: str | Callable | BRGMModel | None = DEFAULT_MODEL,
    params: BRGMParams | str | None = None,
    perceptual: str | nn.Module | None = "auto",
    map_result: ReconstructionResult | None = None,
    map_schedule: MAPSchedule | None = None,
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
    checks, phi(y), the prior's card), the model and reach chosen (``models.variants.choose``), the MAP
    (``reconstruct.map_reconstruction``) unless ``map_result`` is given, SVI or MCMC started from it
    (``brgm_pyro.inference``), the images G(w) of the draws (``pyro.infer.Predictive``), the reach
    residual added (``uncertainty.discrepancy.predictive_images``), the diagnostics, the calibration,
    and the ``Posterior``, built once.

    Args:
        y, f, G, params, perceptual: as for :func:`brgm_pyro.reconstruct`.
        method: "svi" (a Gaussian guide fitted by SVI, :mod:`brgm_pyro.inference.svi`), "nuts" or
            "hmc" (:mod:`brgm_pyro.inference.mcmc`).
        num_samples: draws from the fitted guide (SVI), or kept draws per chain (MCMC, which
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
        map_result: a MAP reconstruction of this y to start from (skips the MAP).
        map_schedule: the MAP's Adam schedule (default: the prior card's, else ``MAPSchedule()``).
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
            map_result = map_reconstruction(problem, map_schedule, spec, seed, progress)
    else:
        _check_map_result(map_result, problem)
    kwargs = problem.model_kwargs()
    with frozen(problem.generator):
        with _timed(timings, "inference_s"):
            inference = _infer(method, spec.inferred, kwargs, _initial_values(latents, map_result, problem.y.device),
                               settings, num_samples, seed, progress)
        with _timed(timings, "images_s"):
            images = predict_images(spec.inferred, kwargs, inference.draws, chunk_size, clamp=False)
            draws = {**inference.draws, **_complete(spec.collapsed, images, kwargs, inference.num_chains, seed)}
            images = images.clamp(0.0, 1.0)
        predictive = images
        if sigma_reach is not None:
            with _timed(timings, "reach_s"):
                noise = draws["sigma_pixel"] if "sigma_pixel" in draws else problem.params.sigma_pixel
                predictive = predictive_images(images, problem.y, problem.forward, sigma_reach, noise, chunk_size, seed)
    record = _settings_record(problem, spec, inference.settings, map_result, method, seed, chunk_size, sigma_reach)
    G = problem.generator
    diagnostics = {**inference.diagnostics, **timings}
    draws = {name: value.detach().cpu() for name, value in draws.items()}
    if method != "svi":
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
        notes=notes,
    )


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
    problem: Problem, spec: BRGMModel, inference: SVISettings | MCMCSettings, map_result: ReconstructionResult,
    method: str, seed: int, chunk_size: int, sigma_reach: float | None,
) -> dict[str, Any]:
    """Everything that defined the run, JSON-able (``Posterior.settings``; a calibration matches its
    ``conformal.procedure``)."""
    return {
        "method": method,
        "model": spec.name,
        "params": asdict(problem.params),
        "inference": asdict(inference),
        "map_schedule": asdict(map_result.schedule),
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
    """Where the inference starts: the MAP of w and of the model's other latents (a blur width), and, for
    a latent noise level, the MAP's residual RMSE. Copies, as a guide may take them as its parameters and
    update them in place."""
    values = {"w": rec.w.detach().to(device, copy=True)}
    values.update({name: value.detach().to(device, copy=True) for name, value in rec.latents.items() if name in latents})
    if "sigma_pixel" in latents:
        rmse = rec.data_consistency["rmse"].clamp_min(1e-3).to(device, copy=True)
        values["sigma_pixel"] = rmse.reshape(latents["sigma_pixel"])
    return values


@dataclass
class _Inference:
    """What SVI or MCMC gives: the draws of the latents (site -> (S, ...)) and how they were made."""

    draws: dict[str, torch.Tensor]
    settings: SVISettings | MCMCSettings
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
    clamp: bool = True,
) -> torch.Tensor:
    """G(w) for each draw of the latents (site -> (S, ...)), through Predictive in chunks: (S, B, C, H, W) on the
    CPU, clamped to [0, 1] unless ``clamp=False``."""
    num = next(iter(latents.values())).shape[0]
    chunks = []
    for start in range(0, num, chunk_size):
        chunk = {name: value[start : start + chunk_size] for name, value in latents.items()}
        predictive = Predictive(model, posterior_samples=chunk, return_sites=["image"])
        chunks.append(predictive(**model_kwargs)["image"].cpu())
    images = torch.cat(chunks)
    return images.clamp(0.0, 1.0) if clamp else images


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
