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
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import Predictive
from torch import nn

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.forward import per_draw
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.inference.mcmc import MCMCSettings, run_mcmc
from brgm_pyro.inference.svi import SVISettings, choose_guide, draw_latents, run_svi
from brgm_pyro.models.brgm import BRGMParams, Collapsed
from brgm_pyro.models.variants import check_model, get_model, model_name
from brgm_pyro.posterior import Posterior
from brgm_pyro.problem import Problem, frozen, prepare_problem
from brgm_pyro.reconstruct import ReconstructionResult, map_reconstruction
from brgm_pyro.uncertainty.conformal import Calibration, fingerprint, load_calibrations, task_family
from brgm_pyro.uncertainty.discrepancy import check_linear, sample_reach_residual
from brgm_pyro.uncertainty.leverage import unpinned_pixels

__all__ = ["DEFAULT_MODEL", "METHODS", "attach_calibration", "posterior_model", "resolve_model", "sample_posterior"]

METHODS = ("svi", "nuts", "hmc")
DEFAULT_MODEL = "auto"
"""The model ``sample_posterior`` and ``brgm sample`` use unless told otherwise: "reach" where the
prior has a reach (its card's ``sigma_reach``, or the caller's), else "learned-noise" (:func:`resolve_model`)."""


def resolve_model(model: str | Callable | None, sigma_reach: float | None) -> str | Callable | None:
    """``model`` with "auto" resolved: the reach in the likelihood ("reach") when there is a reach to
    put there, else the noise level inferred alone ("learned-noise"); any other model unchanged."""
    if isinstance(model, str) and model == "auto":
        return "reach" if sigma_reach else "learned-noise"
    return model


def sample_posterior(
    y: torch.Tensor,
    f: nn.Module,
    G: nn.Module,
    method: str = "svi",
    num_samples: int = 16,
    *,
    model: str | Callable | None = DEFAULT_MODEL,
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
    """Posterior draws of the clean images behind the corrupted images y (B, C, h, w) in [0, 1].

    The data flow one way: the settings resolved, the problem prepared (``brgm_pyro.problem``:
    checks, phi(y), the prior's card), the MAP (``reconstruct.map_reconstruction``) unless
    ``map_result`` is given, SVI or MCMC started from it (``brgm_pyro.inference``), the images G(w)
    of the draws (``pyro.infer.Predictive``), the reach residual added, and the ``Posterior``.

    Args:
        y, f, G, params, perceptual: as for :func:`brgm_pyro.reconstruct`.
        method: "svi" (a Gaussian guide fitted by SVI, :mod:`brgm_pyro.inference.svi`), "nuts" or
            "hmc" (:mod:`brgm_pyro.inference.mcmc`).
        num_samples: draws from the fitted guide (SVI), or kept draws per chain (MCMC, which
            returns ``num_chains * num_samples`` draws, as Pyro's MCMC does).
        model: a registered model name ("reach", "learned-noise", "brgm", "heavy-tail",
            "no-colinear"), "auto", or a Pyro model with the signature of ``brgm.model`` (None:
            ``brgm.model``). The default, "auto", is "reach" for a prior with a reach (the card's
            ``sigma_reach``, or the ``sigma_reach`` given): the reach residual in the likelihood and
            sigma_pixel inferred per image, so that a w whose G(w) misses y by the prior's reach stays
            plausible (docs/results/calibration.md: it covers more of the unobserved pixels than
            "learned-noise", which "auto" takes for a prior without a reach). "brgm" is the paper's
            model with the fixed sigma_pixel, whose intervals are far too narrow on real images.
        map_result: a MAP reconstruction of this y to start from (skips the MAP).
        map_schedule: the MAP's Adam schedule (default: the prior card's, else ``MAPSchedule()``).
        settings: :class:`~brgm_pyro.inference.svi.SVISettings` or
            :class:`~brgm_pyro.inference.mcmc.MCMCSettings`; ``options`` override single fields,
            e.g. ``guide="normal"``, ``rank=32``, ``steps=1000`` (SVI) or ``num_chains=4``,
            ``warmup_steps=200``, ``max_tree_depth=8`` (MCMC).
        sigma_reach: std of the prior's reach residual per clean pixel (``brgm_pyro.uncertainty.discrepancy``):
            "auto" takes the prior card's ``sigma_reach`` (off for priors without one), None or 0
            turns the term off, a positive number sets it. Needs a linear f.
        calibration: the calibration of the intervals (``brgm_pyro.uncertainty.conformal``) that
            ``post.interval`` and ``post.error_radius`` use by default: "auto" takes the prior card's
            for this task when it holds for this posterior (same prior, procedure and at least as many
            draws; otherwise the posterior's own intervals, and ``post.calibration_note`` says why),
            None none, a :class:`~brgm_pyro.uncertainty.conformal.Calibration` or the path of a file written by
            ``brgm calibrate`` one that must hold (else InputError).
        chunk_size: draws per Predictive call when computing the images.
        seed: seed of Pyro and torch for this run.
        progress: show progress bars.
    """
    settings = _resolve_settings(method, num_samples, chunk_size, settings, options)
    model, problem, sigma_reach = posterior_model(model, sigma_reach, prepare_problem(y, f, G, params, perceptual))
    inferred, latents = _inferred_model(model, problem)
    timings: dict[str, float] = {}
    if map_result is None:
        with _timed(timings, "map_s"):
            map_result = map_reconstruction(problem, map_schedule, model, seed, progress)
    else:
        _check_map_result(map_result, problem)
    init_values = _initial_values(latents, map_result, problem.y.device)
    kwargs = problem.model_kwargs()
    with frozen(problem.generator):
        with _timed(timings, "inference_s"):
            inference = _infer(method, inferred, kwargs, init_values, settings, num_samples, seed, progress)
        with _timed(timings, "images_s"):
            images = _images(model, kwargs, inference, chunk_size, seed)
        predictive = images
        if sigma_reach is not None:
            with _timed(timings, "reach_s"):
                predictive = add_reach(images, inference.draws, problem, sigma_reach, chunk_size, seed)
    inference.diagnostics.update(timings)
    posterior = _posterior(problem, map_result, inference, images, predictive, sigma_reach,
                           method=method, model=model_name(model), seed=seed, chunk_size=chunk_size)
    return attach_calibration(posterior, problem, calibration)


def attach_calibration(
    posterior: Posterior, problem: Problem, calibration: Calibration | str | Path | None
) -> Posterior:
    """``posterior`` with its task, unpinned pixels and the calibration its intervals use (see
    ``sample_posterior``), and a note saying which intervals these are."""
    posterior.task = task_family(problem.forward)
    G = problem.generator
    if posterior.task is not None:
        clean_shape = (problem.y.shape[0], G.channels, G.resolution, G.resolution)
        posterior.unpinned = unpinned_pixels(problem.forward, clean_shape).cpu().expand(clean_shape)
    explicit = calibration is not None and not (isinstance(calibration, str) and calibration == "auto")
    if calibration is None:
        posterior.calibration_note = "The posterior's own intervals: calibration=None."
        return posterior
    if isinstance(calibration, (str, Path)) and explicit:
        found = load_calibrations(calibration)
        if posterior.task not in found:
            raise InputError(
                f"{calibration} holds calibrations for {', '.join(sorted(found)) or 'no task'}, not for this "
                f"posterior's task {posterior.task or '(not a calibrated kind)'}; calibrate this task with `brgm calibrate`."
            )
        calibration = found[posterior.task]
    elif not explicit:
        calibration = problem.card.calibrations.get(posterior.task) if posterior.task else None
        if calibration is None:
            posterior.calibration_note = (
                f"The posterior's own intervals: the prior's card has no calibration for "
                f"{posterior.task or 'this corruption'}."
            )
            return posterior
    elif not isinstance(calibration, Calibration):
        raise InputTypeError(
            f"calibration must be 'auto', None, a Calibration or the path of a calibration file, got "
            f"{type(calibration).__name__}."
        )
    reason = calibration.check(posterior.task, fingerprint(G), posterior.settings, posterior.num_samples)
    if reason is not None:
        if explicit:
            raise InputError(f"This calibration does not hold for this posterior: {reason}; calibrate it with `brgm calibrate`.")
        posterior.calibration_note = f"The posterior's own intervals: the card's calibration for {posterior.task} does not apply, {reason}."
        return posterior
    posterior.calibration = calibration
    posterior.calibration_note = (
        f"Calibrated intervals: {posterior.task}, {calibration.images} validation images ({calibration.data})."
        if calibration.data else f"Calibrated intervals: {posterior.task}, {calibration.images} validation images."
    )
    return posterior


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


def posterior_model(model: str | Callable | None, sigma_reach: float | str | None,
                    problem: Problem) -> tuple[Callable, Problem, float | None]:
    """What :func:`sample_posterior` runs for its ``model`` and ``sigma_reach`` arguments: the model with
    "auto" resolved, the problem with that reach in its params and the reach ("auto": the card's)."""
    given = None if isinstance(model, str) and model == "auto" else get_model(model)
    sigma_reach = _resolve_sigma_reach(sigma_reach, problem, given)
    # One value of the reach for the likelihood (models that have it there) and the predictive.
    problem = replace(problem, params=replace(problem.params, sigma_reach=sigma_reach or 0.0))
    return get_model(resolve_model(model, sigma_reach)), problem, sigma_reach


def _resolve_sigma_reach(sigma_reach: float | str | None, problem: Problem, model: Callable | None) -> float | None:
    """The std of the reach residual: "auto" is the prior card's; a value needs a linear f that is known.
    A model that infers a parameter of f (``model.corruption``) has no known f to condition the residual
    on, so "auto" is off for it."""
    inferred_corruption = model is not None and getattr(model, "corruption", None) is not None
    if sigma_reach == "auto":
        sigma_reach = None if inferred_corruption else problem.card.sigma_reach
    elif isinstance(sigma_reach, (bool, str)) or not (sigma_reach is None or 0 <= sigma_reach < math.inf):
        raise InputError(
            f"sigma_reach must be 'auto', None, 0 or a positive number (std per clean pixel), got {sigma_reach!r}."
        )
    if not sigma_reach:
        return None
    if inferred_corruption:
        raise InputError(
            f"The model {model_name(model)} infers the corruption, but the reach term (sigma_reach) needs f known; "
            "pass sigma_reach=None."
        )
    G = problem.generator
    check_linear(problem.forward, (problem.y.shape[0], G.channels, G.resolution, G.resolution), device=problem.y.device)
    return float(sigma_reach)


def _inferred_model(model: Callable, problem: Problem) -> tuple[Callable, dict[str, torch.Size]]:
    """The model the inference runs on, and its latent sites' shapes, after checking ``model``.

    A model may say how to integrate latents out (``model.collapsed``; learned-noise: sigma_pixel,
    by conjugacy); the inference then runs on w alone and each draw gets those latents from their
    exact conditional (``_complete``).
    """
    kwargs = problem.model_kwargs()
    with frozen(problem.generator):
        latents = check_model(model, kwargs)
        collapsed = getattr(model, "collapsed", None)
        if collapsed is None:
            return model, latents
        return collapsed.model, check_model(collapsed.model, kwargs)


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
    diagnostics = {"chain_seconds": run.seconds}
    if run.setup_seconds:
        diagnostics["precondition_s"] = run.setup_seconds
    diagnostics["acceptance_rate"] = run.acceptance_rate
    return _Inference(run.samples, settings, run.num_chains, sample_stats=run.sample_stats,
                      diagnostics=diagnostics)


def _images(
    model: Callable, model_kwargs: dict, inference: _Inference, chunk_size: int, seed: int
) -> torch.Tensor:
    """G(w) of each draw, (S, B, C, H, W) in [0, 1] on the CPU; the latents ``model`` integrates out
    (``model.collapsed``) are drawn for each draw from their conditional and added to ``inference.draws``."""
    collapsed = getattr(model, "collapsed", None)
    inferred = model if collapsed is None else collapsed.model
    images = predict_images(inferred, model_kwargs, inference.draws, chunk_size, clamp=False)
    if collapsed is not None:
        device = model_kwargs["y"].device
        inference.draws.update(_complete(collapsed, images, model_kwargs, inference.num_chains, seed, device))
    return images.clamp(0.0, 1.0)


def _posterior(
    problem: Problem, map_result: ReconstructionResult, inference: _Inference, images: torch.Tensor,
    predictive: torch.Tensor, sigma_reach: float | None, *, method: str, model: str, seed: int,
    chunk_size: int,
) -> Posterior:
    """The result: the draws, the MAP, the inputs and the settings, with MCMC's convergence diagnostics."""
    G = problem.generator
    posterior = Posterior(
        samples=predictive,
        generator_samples=images,
        sigma_reach=sigma_reach,
        latents={name: value.detach().cpu() for name, value in inference.draws.items()},
        num_chains=inference.num_chains,
        method=method,
        map=map_result,
        y=problem.y.cpu(),
        observed=problem.observed.cpu(),
        w_avg=G.w_avg.detach().cpu(),
        w_std=G.w_std.detach().cpu(),
        sample_stats=inference.sample_stats,
        loss_trace=inference.loss_trace,
        diagnostics=inference.diagnostics,
        settings={
            "method": method,
            "model": model,
            "params": asdict(problem.params),
            "inference": asdict(inference.settings),
            "map_schedule": asdict(map_result.schedule),
            "seed": seed,
            "chunk_size": chunk_size,
            "sigma_reach": sigma_reach,
            "perceptual": type(problem.perceptual).__name__ if problem.perceptual is not None else None,
        },
    )
    if method != "svi":
        inference.diagnostics.update(mcmc_diagnostics(posterior, inference.settings))
    return posterior


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
    collapsed: Collapsed, images: torch.Tensor, model_kwargs: dict, num_chains: int, seed: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """The integrated-out latents of each draw from their conditional, chain by chain, each chain's
    draws seeded by its own seed (seed + k, as its sampler), so a chain run alone gets the same draws."""
    parts = []
    for chain, chunk in enumerate(images.chunk(num_chains)):
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed + chain)
            parts.append(collapsed.conditional(chunk, model_kwargs))
    return {name: torch.cat([part[name].cpu() for part in parts]) for name in parts[0]}


def add_reach(
    images: torch.Tensor,
    draws: dict[str, torch.Tensor],
    problem: Problem,
    sigma_reach: float,
    chunk_size: int,
    seed: int,
) -> torch.Tensor:
    """G(w) + r for each draw, r ~ p(r | y, w) (``brgm_pyro.uncertainty.discrepancy``), clamped to [0, 1]: (S, B, C, H, W) on the CPU."""
    num, batch = images.shape[:2]
    device = problem.y.device
    f = per_draw(problem.forward, batch)
    noise = draws.get("sigma_pixel")
    gen = torch.Generator().manual_seed(10_007 + seed)
    out = []
    for start in range(0, num, chunk_size):
        chunk = images[start : start + chunk_size].to(device)
        flat = chunk.reshape(-1, *chunk.shape[2:])
        with torch.no_grad():
            residual = problem.y.repeat(chunk.shape[0], 1, 1, 1) - f(flat)
        sigma_pixel: float | torch.Tensor = problem.params.sigma_pixel
        if noise is not None:
            sigma_pixel = noise[start : start + chunk_size].reshape(-1, 1, 1, 1).to(device=device, dtype=residual.dtype)
        observed = problem.observed.expand_as(problem.y).repeat(chunk.shape[0], 1, 1, 1)
        r = sample_reach_residual(residual, f, observed, tuple(flat.shape), sigma_reach, sigma_pixel, generator=gen)
        out.append((flat + r).clamp(0.0, 1.0).reshape(chunk.shape).cpu())
    return torch.cat(out)


def mcmc_diagnostics(posterior: Posterior, settings: MCMCSettings) -> dict[str, Any]:
    """Divergences, tree depths, and R-hat and bulk ESS (ArviZ) of the monitored scalars, with ESS per second."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        table = az.summary(posterior.inference_data, kind="diagnostics", round_to="none")
    stats = posterior.sample_stats
    seconds = sum(posterior.diagnostics.get("chain_seconds", [])) or float("nan")
    out: dict[str, Any] = {
        "divergences": int(stats["diverging"].sum()),
        "divergence_fraction": float(stats["diverging"].float().mean()),
        "mean_step_size": float(stats["step_size"].mean()),
        "mean_n_steps": float(stats["n_steps"].float().mean()),
        "sampling_s": seconds,
        "monitored": {
            label: {
                "r_hat": float(row["r_hat"]),
                "ess_bulk": float(row["ess_bulk"]),
                "ess_bulk_per_s": float(row["ess_bulk"]) / seconds,
            }
            for label, row in table.iterrows()
        },
    }
    if "tree_depth" in stats:
        out["mean_tree_depth"] = float(stats["tree_depth"].float().mean())
        out["max_tree_depth_fraction"] = float((stats["tree_depth"] >= settings.max_tree_depth).float().mean())
    r_hats = [v["r_hat"] for v in out["monitored"].values() if math.isfinite(v["r_hat"])]
    out["max_r_hat"] = max(r_hats) if r_hats else float("nan")
    out["min_ess_bulk"] = min(v["ess_bulk"] for v in out["monitored"].values())
    return out
