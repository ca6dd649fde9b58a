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
(``brgm_pyro.discrepancy``): the posterior then also says where the prior itself cannot be
trusted, and its credible intervals are about clean images rather than about G(w) alone.

All images of one call share one posterior: with ``method="svi"`` and the "normal" guide that
changes nothing (the guide factorises over images), but a low-rank guide and the MCMC step size
and mass matrix are then shared by the batch, and the Laplace whitening of the "laplace" guide and
of NUTS costs B^2 times that of one image (the default guide, "auto", takes "normal" for a
batch). Pass one image per call for those (the ``brgm sample`` command and the calibration
benchmark do).
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import Predictive
from pyro.poutine.util import site_is_subsample
from torch import nn

from brgm_pyro.discrepancy import check_linear, sample_reach_residual
from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.inference.mcmc import MCMCSettings, run_mcmc
from brgm_pyro.inference.svi import SVISettings, choose_guide, draw_latents, run_svi
from brgm_pyro.models.brgm import BRGMParams, Collapsed
from brgm_pyro.models.variants import get_model, model_name
from brgm_pyro.posterior import Posterior
from brgm_pyro.problem import frozen, prepare_problem
from brgm_pyro.reconstruct import ReconstructionResult, reconstruct

__all__ = ["DEFAULT_MODEL", "METHODS", "check_model", "sample_posterior"]

METHODS = ("svi", "nuts", "hmc")
DEFAULT_MODEL = "learned-noise"
"""The model ``sample_posterior`` and ``brgm sample`` use unless told otherwise (see ``sample_posterior``)."""
MODEL_ARGUMENTS = "(y, forward, generator, params, observed, perceptual, y_features)"



def check_model(model: Callable, model_kwargs: dict[str, Any]) -> dict[str, torch.Size]:
    """Check that ``model`` can stand in for ``brgm.model`` on this problem; return its latent sites' shapes.

    It must take the arguments of ``brgm.model``, have a continuous latent site "w" of shape
    (B, num_ws, w_dim) and record the clean images at a deterministic site "image" (B, C, H, W).
    """
    name = model_name(model)
    try:
        inspect.signature(model).bind(**model_kwargs)
    except TypeError as err:
        raise InputTypeError(
            f"The model {name} must take the arguments of brgm.model {MODEL_ARGUMENTS}, but {err}; "
            "give it that signature."
        ) from None
    try:
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(model).get_trace(**model_kwargs)
    except Exception as err:
        first_line = (str(err).splitlines() or [""])[0]
        raise InputError(
            f"The model {name} fails on this problem ({type(err).__name__}: {first_line}); "
            "check it against brgm.model."
        ) from err
    y, G = model_kwargs["y"], model_kwargs["generator"]
    latents = {
        site: node["value"].shape
        for site, node in trace.nodes.items()
        if node["type"] == "sample" and not node["is_observed"] and not site_is_subsample(node)
    }
    expected = torch.Size((y.shape[0], G.num_ws, G.w_dim))
    if latents.get("w") != expected:
        found = f"shape {tuple(latents['w'])}" if "w" in latents else "no such site"
        raise InputError(
            f"The model {name} needs a latent site 'w' of shape {tuple(expected)} (images, num_ws, w_dim), "
            f"found {found}; sample w as brgm.model does."
        )
    image = trace.nodes.get("image")
    clean_shape = (y.shape[0], G.channels, G.resolution, G.resolution)
    if image is None or tuple(image["value"].shape) != clean_shape:
        raise InputError(
            f"The model {name} must record G(w) in [0, 1] as pyro.deterministic('image', ..., event_dim=3) "
            f"of shape {clean_shape}; add that line as in brgm.model."
        )
    for site in latents:
        if trace.nodes[site]["fn"].support.is_discrete:
            raise InputError(
                f"The model {name} has a discrete latent site {site!r}; SVI and MCMC here need continuous latents."
            )
    return latents


def _settings_for(method: str, num_samples: int, settings: Any, overrides: dict[str, Any]) -> Any:
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


def _initial_values(latents: dict[str, torch.Size], rec: ReconstructionResult, device: torch.device) -> dict:
    """Where the inference starts: the MAP w and, for a latent noise level, the MAP's residual RMSE.
    Copies, as a guide may take them as its parameters and update them in place."""
    values = {"w": rec.w.detach().to(device, copy=True)}
    if "sigma_pixel" in latents:
        rmse = rec.data_consistency["rmse"].clamp_min(1e-3).to(device, copy=True)
        values["sigma_pixel"] = rmse.reshape(latents["sigma_pixel"])
    return values


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


def _resolve_sigma_reach(sigma_reach: float | str | None, G: nn.Module) -> float | None:
    if sigma_reach == "auto":
        value = (getattr(G, "card", None) or {}).get("sigma_reach")
        return float(value) if value else None
    if sigma_reach is None:
        return None
    if isinstance(sigma_reach, (bool, str)) or not (0 <= sigma_reach < float("inf")):
        raise InputError(
            f"sigma_reach must be 'auto', None, 0 or a positive number (std per clean pixel), got {sigma_reach!r}."
        )
    return float(sigma_reach) or None


def add_reach(
    images: torch.Tensor,
    draws: dict[str, torch.Tensor],
    problem: Any,
    sigma_reach: float,
    chunk_size: int,
    seed: int,
) -> torch.Tensor:
    """G(w) + r for each draw, r ~ p(r | y, w) (``brgm_pyro.discrepancy``), clamped to [0, 1]: (S, B, C, H, W) on the CPU."""
    num, batch = images.shape[:2]
    device = problem.y.device
    f = problem.forward
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
    chunk_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> Posterior:
    """Posterior draws of the clean images behind the corrupted images y (B, C, h, w) in [0, 1].

    Runs the MAP (``reconstruct``) unless ``map_result`` is given, then SVI or MCMC from it.

    Args:
        y, f, G, params, perceptual: as for :func:`brgm_pyro.reconstruct`.
        method: "svi" (a Gaussian guide fitted by SVI, :mod:`brgm_pyro.inference.svi`), "nuts" or
            "hmc" (:mod:`brgm_pyro.inference.mcmc`).
        num_samples: draws from the fitted guide (SVI), or kept draws per chain (MCMC, which
            returns ``num_chains * num_samples`` draws, as Pyro's MCMC does).
        model: a registered model name ("brgm", "learned-noise", "heavy-tail", "no-colinear") or a
            Pyro model with the signature of ``brgm.model`` (None: ``brgm.model``). The default,
            "learned-noise", infers sigma_pixel per image, so the noise level also takes up the
            prior's misfit to y; with the reach term this is what makes the credible intervals
            calibrated on real images (README, *Calibration*). "brgm" is the paper's model with the
            fixed sigma_pixel, which gives intervals that are too narrow on real images.
        map_result: a MAP reconstruction of this y to start from (skips the MAP).
        map_schedule: the MAP's Adam schedule (default ``MAPSchedule()``).
        settings: :class:`~brgm_pyro.inference.svi.SVISettings` or
            :class:`~brgm_pyro.inference.mcmc.MCMCSettings`; ``options`` override single fields,
            e.g. ``guide="normal"``, ``rank=32``, ``steps=1000`` (SVI) or ``num_chains=4``,
            ``warmup_steps=200``, ``max_tree_depth=8`` (MCMC).
        sigma_reach: std of the prior's reach residual per clean pixel (``brgm_pyro.discrepancy``):
            "auto" takes the prior card's ``sigma_reach`` (off for priors without one), None or 0
            turns the term off, a positive number sets it. Needs a linear f.
        chunk_size: draws per Predictive call when computing the images.
        seed: seed of Pyro and torch for this run.
        progress: show progress bars.
    """
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; choose one of: {', '.join(METHODS)}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise InputError(f"num_samples must be a positive integer, got {num_samples!r}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    settings = _settings_for(method, num_samples, settings, options)
    sigma_reach = _resolve_sigma_reach(sigma_reach, G)
    model = get_model(model)
    problem = prepare_problem(y, f, G, params, perceptual)
    kwargs = problem.model_kwargs()
    device = G.w_avg.device
    if sigma_reach is not None:
        check_linear(f, (1, G.channels, G.resolution, G.resolution), device=device)
    with frozen(G):
        latents = check_model(model, kwargs)
    # A model may say how to integrate latents out (learned-noise: sigma_pixel, by conjugacy); the
    # inference then runs on w alone and each draw gets those latents from their exact conditional.
    collapsed = getattr(model, "collapsed", None)
    inferred = model
    if collapsed is not None:
        inferred = collapsed.model
        with frozen(G):
            latents = check_model(inferred, kwargs)
    batch = problem.y.shape[0]
    timings: dict[str, float] = {}
    if map_result is None:
        began = time.perf_counter()
        map_result = reconstruct(
            y,
            f,
            G,
            params=problem.params,
            perceptual=problem.perceptual,
            schedule=map_schedule,
            model=model,
            seed=seed,
            progress=progress,
        )
        timings["map_s"] = time.perf_counter() - began
    elif not isinstance(map_result, ReconstructionResult):
        raise InputTypeError(f"map_result must be a ReconstructionResult, got {type(map_result).__name__}.")
    elif tuple(map_result.w.shape) != (batch, G.num_ws, G.w_dim):
        raise InputError(
            f"map_result holds w of shape {tuple(map_result.w.shape)}, but this problem needs "
            f"{(batch, G.num_ws, G.w_dim)}; pass the MAP of these images with this generator."
        )
    init_values = _initial_values(latents, map_result, device)

    pyro.set_rng_seed(seed)
    loss_trace = None
    sample_stats: dict[str, torch.Tensor] = {}
    diagnostics: dict[str, Any] = {}
    num_chains = 1
    began = time.perf_counter()
    with frozen(G):
        if method == "svi":
            settings = choose_guide(inferred, kwargs, init_values, settings)  # recorded with "auto" resolved
            guide, loss_trace = run_svi(inferred, kwargs, init_values, settings, progress=progress)
            draws = draw_latents(guide, kwargs, num_samples)
            diagnostics["final_loss"] = float(loss_trace[-10:].mean())
        else:
            run = run_mcmc(inferred, kwargs, init_values, settings, seed=seed, progress=progress)
            draws, sample_stats, num_chains = run.samples, run.sample_stats, run.num_chains
            diagnostics["chain_seconds"] = run.seconds
            if run.setup_seconds:
                diagnostics["precondition_s"] = run.setup_seconds
            diagnostics["acceptance_rate"] = run.acceptance_rate
        timings["inference_s"] = time.perf_counter() - began
        began = time.perf_counter()
        images = predict_images(inferred, kwargs, draws, chunk_size, clamp=False)
        if collapsed is not None:
            draws.update(_complete(collapsed, images, kwargs, num_chains, seed, device))
        images = images.clamp(0.0, 1.0)
        timings["images_s"] = time.perf_counter() - began
        predictive = images
        if sigma_reach is not None:
            began = time.perf_counter()
            predictive = add_reach(images, draws, problem, sigma_reach, chunk_size, seed)
            timings["reach_s"] = time.perf_counter() - began
    diagnostics.update(timings)
    posterior = Posterior(
        samples=predictive,
        generator_samples=images,
        sigma_reach=sigma_reach,
        latents={name: value.detach().cpu() for name, value in draws.items()},
        num_chains=num_chains,
        method=method,
        map=map_result,
        y=problem.y.cpu(),
        observed=problem.observed.cpu(),
        w_avg=G.w_avg.detach().cpu(),
        w_std=G.w_std.detach().cpu(),
        sample_stats=sample_stats,
        loss_trace=loss_trace,
        diagnostics=diagnostics,
        settings={
            "method": method,
            "model": model_name(model),
            "params": asdict(problem.params),
            "inference": asdict(settings),
            "map_schedule": asdict(map_result.schedule),
            "seed": seed,
            "chunk_size": chunk_size,
            "sigma_reach": sigma_reach,
        },
    )
    if method != "svi":
        diagnostics.update(mcmc_diagnostics(posterior, settings))
    return posterior


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
