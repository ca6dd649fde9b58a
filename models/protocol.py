"""What a model must be for the inference drivers, written out: ``BRGMModel`` and ``check_model``.

A BRGM model is a Pyro function with the signature of ``brgm.model``,

    model(y, forward, generator, params, observed, perceptual, y_features) -> G(w) in [0, 1]

with one ``pyro.plate("images", B)``, a continuous latent site "w" (B, num_ws, w_dim) and the
clean images recorded as ``pyro.deterministic("image", ..., event_dim=3)``. Besides the function, a
model may tell the drivers two things, which ``BRGMModel`` holds:

- ``collapsed``: latents it lets the drivers integrate out in closed form (:class:`Collapsed`;
  learned-noise: sigma_pixel). The MAP, SVI, NUTS and HMC then run on ``collapsed.model`` (w alone),
  and each draw gets those latents from their exact conditional.
- ``corruption``: how to build f at the inferred value of a latent of the corruption
  (unknown-blur: ``corruption(f, latents)`` is f at the blur widths ``latents["sigma_b"]``), for
  f(G(w)) and the data consistency. A model with one infers f, so the reach, which conditions on a
  known f, is off for it.
- ``needs_reach``: its likelihood holds the prior's reach (``params.sigma_reach`` > 0, and f's
  structure, ``brgm_pyro.forward.Operator.gram``).

- ``start``: the model's latents at a draw (z, w = mapping(z)) of G's own prior, where the mode
  search starts it (``brgm_pyro.search``): w on every layer for the W+ models, z for ``mapping``.

The likelihood of y is the model's sites ``LIKELIHOOD_SITES`` ("y" and "y_features"): the search
ranks draws of the prior by it.

A plain function is a ``BRGMModel`` with none of these (``BRGMModel.of(fn)``, starting at w).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from brgm_pyro.errors import InputError, InputTypeError

__all__ = ["LIKELIHOOD_SITES", "MODEL_ARGUMENTS", "BRGMModel", "Collapsed", "check_model", "w_plus_start"]

MODEL_ARGUMENTS = "(y, forward, generator, params, observed, perceptual, y_features)"
LIKELIHOOD_SITES = ("y", "y_features")
"""The sites of a model that hold the likelihood of y (the pixel and the perceptual terms)."""


def w_plus_start(z: torch.Tensor, w: torch.Tensor, generator: Any) -> dict[str, torch.Tensor]:
    """The latents of a W+ model at a draw (z, w) of G's prior: the same w on every layer, (N, num_ws, w_dim)."""
    return {"w": w[:, None, :].expand(-1, generator.num_ws, -1).contiguous()}


@dataclass(frozen=True)
class Collapsed:
    """Latents a model lets inference integrate out (``BRGMModel.collapsed``).

    Attributes:
        model: the model with those latents integrated out (same signature, latent "w" only).
        conditional: ``conditional(images, model_kwargs)`` draws the integrated latents from their
            exact conditional given each draw of w: ``images`` are the draws' G(w), (S, B, C, H, W)
            in [0, 1] unclamped; returns site -> (S, B, ...).
        sites: the names of the latents it integrates out.
    """

    model: Callable
    conditional: Callable
    sites: tuple[str, ...]


@dataclass(frozen=True)
class BRGMModel:
    """A model and what it tells the drivers (module notes).

    Attributes:
        name: the registered name, or the function's qualified name.
        model: the Pyro function.
        collapsed: latents integrated out for inference, or None.
        corruption: ``corruption(f, latents) -> f`` at the inferred corruption latents, or None.
        needs_reach: whether its likelihood holds the prior's reach.
        start: ``start(z, w, generator) -> latents`` at a draw of G's prior (module notes).
    """

    name: str
    model: Callable
    collapsed: Collapsed | None = None
    corruption: Callable | None = None
    needs_reach: bool = False
    start: Callable = w_plus_start

    @classmethod
    def of(cls, model: Callable) -> BRGMModel:
        """A user's plain Pyro function as a model with no collapsed latents and a known f."""
        if isinstance(model, BRGMModel):
            return model
        if not callable(model):
            raise InputTypeError(
                f"model must be a registered name, a BRGMModel or a Pyro model (a function), got {type(model).__name__}."
            )
        name = f"{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', repr(model))}"
        return cls(name=name, model=model)

    @property
    def inferred(self) -> Callable:
        """The function the MAP, SVI and MCMC run on: the collapsed model where there is one."""
        return self.collapsed.model if self.collapsed is not None else self.model

    @property
    def infers_corruption(self) -> bool:
        return self.corruption is not None


def _first_line(message: str) -> str:
    """A message without the trace-shape table that Pyro appends to errors raised inside a model."""
    return message.split("\nTrace Shapes:")[0].split("\n Trace Shapes:")[0].strip()


def check_model(model: BRGMModel | Callable, model_kwargs: dict[str, Any]) -> dict[str, torch.Size]:
    """Check that ``model`` can stand in for ``brgm.model`` on this problem; return its latent sites' shapes.

    It must take the arguments of ``brgm.model``, have a site "w" of shape (B, num_ws, w_dim), a
    continuous latent or a deterministic function of one (``mapping``: of z), and record the clean
    images at a deterministic site "image" (B, C, H, W).
    An error the model raises about its input keeps its own sentence (without Pyro's shape table).
    """
    spec = BRGMModel.of(model)
    fn, name = spec.model, spec.name
    try:
        inspect.signature(fn).bind(**model_kwargs)
    except TypeError as err:
        raise InputTypeError(
            f"The model {name} must take the arguments of brgm.model {MODEL_ARGUMENTS}, but {err}; "
            "give it that signature."
        ) from None
    try:
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(fn).get_trace(**model_kwargs)
    except InputError as err:
        raise type(err)(_first_line(str(err))) from None
    except Exception as err:
        raise InputError(
            f"The model {name} fails on this problem ({type(err).__name__}: {_first_line(str(err)).splitlines()[0]}); "
            "check it against brgm.model."
        ) from err
    y, G = model_kwargs["y"], model_kwargs["generator"]
    latents = {
        site: node["value"].shape
        for site, node in trace.nodes.items()
        if node["type"] == "sample" and not node["is_observed"] and not site_is_subsample(node)
    }
    expected = torch.Size((y.shape[0], G.num_ws, G.w_dim))
    w_site = trace.nodes.get("w")
    found_shape = tuple(w_site["value"].shape) if w_site is not None and w_site["type"] == "sample" else None
    if found_shape != tuple(expected):
        found = f"shape {found_shape}" if found_shape is not None else "no such site"
        raise InputError(
            f"The model {name} needs a site 'w' of shape {tuple(expected)} (images, num_ws, w_dim), latent or "
            f"pyro.deterministic, found {found}; sample w as brgm.model does."
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
