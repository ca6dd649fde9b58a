"""The registry of BRGM models by name, for the API (``model="learned-noise"``) and the CLI (``--model``),
and ``check_model``, what any model must be to stand in for ``brgm.model``.

    brgm           the paper's model (``brgm.model``)
    learned-noise  sigma_pixel is a per-image latent with a conjugate prior (``learned_noise.model``)
    heavy-tail     Student-t prior on w (``heavy_tail.model``)
    no-colinear    no colinearity factor between the w_l (``no_colinear.model``)
    reach          the prior's reach in the likelihood, sigma_pixel a latent (``reach.model``)
    unknown-blur   the width of a Gaussian blur in f is a per-image latent (``unknown_blur.model``)

Any Pyro model with the signature of ``brgm.model`` can be passed instead of a name, or registered
with :func:`register_model`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.models import brgm, heavy_tail, learned_noise, no_colinear, reach, unknown_blur

__all__ = ["MODELS", "available_models", "check_model", "get_model", "model_name", "register_model"]

MODEL_ARGUMENTS = "(y, forward, generator, params, observed, perceptual, y_features)"

MODELS: dict[str, Callable] = {
    "brgm": brgm.model,
    "learned-noise": learned_noise.model,
    "heavy-tail": heavy_tail.model,
    "no-colinear": no_colinear.model,
    "reach": reach.model,
    "unknown-blur": unknown_blur.model,
}


def available_models() -> list[str]:
    """The registered model names."""
    return list(MODELS)


def register_model(name: str, model: Callable, overwrite: bool = False) -> None:
    """Make ``get_model(name)`` return ``model``, a Pyro model with the signature of ``brgm.model``."""
    if not callable(model):
        raise InputTypeError(f"register_model needs a callable Pyro model, got {type(model).__name__}.")
    if name in MODELS and not overwrite:
        raise InputError(f"A model named {name!r} is already registered; pass overwrite=True to replace it.")
    MODELS[name] = model


def get_model(model: str | Callable | None) -> Callable:
    """A model by registered name, a Pyro model itself, or ``brgm.model`` for None."""
    if model is None:
        return brgm.model
    if isinstance(model, str):
        if model not in MODELS:
            raise InputError(f"Unknown model {model!r}; choose one of: {', '.join(MODELS)}, or pass a Pyro model.")
        return MODELS[model]
    if not callable(model):
        raise InputTypeError(
            f"model must be a registered name or a Pyro model (a function), got {type(model).__name__}."
        )
    return model


def model_name(model: Callable) -> str:
    """The registered name of a model, else its qualified Python name."""
    for name, registered in MODELS.items():
        if registered is model:
            return name
    return f"{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', repr(model))}"


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
    except InputError:
        raise  # the model's own sentence about its input is the clearest one
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
