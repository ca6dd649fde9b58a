"""The registry of BRGM models by name, for the API (``model="learned-noise"``) and the CLI (``--model``),
and the one place that chooses the model and the reach for ``model="auto"`` (:func:`choose`).

    brgm           the paper's model (``brgm.model``)
    learned-noise  sigma_pixel is a per-image latent with a conjugate prior (``learned_noise.model``)
    heavy-tail     Student-t prior on w (``heavy_tail.model``)
    no-colinear    no colinearity factor between the w_l (``no_colinear.model``)
    reach          the prior's reach in the likelihood, sigma_pixel a latent (``reach.model``)
    unknown-blur   the width of a Gaussian blur in f is a per-image latent (``unknown_blur.model``)
    mapping        G's own prior, z ~ N(0, I) and w = mapping(z), with the reach in the likelihood (``mapping.model``)

Each entry is a :class:`~brgm_pyro.models.protocol.BRGMModel`: the function and what it tells the
drivers (latents integrated out, an inferred corruption, a reach in its likelihood). Any Pyro model
with the signature of ``brgm.model`` can be passed instead of a name, or registered with
:func:`register_model`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.models import brgm, heavy_tail, learned_noise, mapping, no_colinear, reach, unknown_blur
from brgm_pyro.models.protocol import BRGMModel
from brgm_pyro.uncertainty.discrepancy import check_linear, has_structure

__all__ = ["MODELS", "available_models", "choose", "get_model", "register_model"]

MODELS: dict[str, BRGMModel] = {
    spec.name: spec
    for spec in (
        BRGMModel("brgm", brgm.model),
        BRGMModel("learned-noise", learned_noise.model, collapsed=learned_noise.collapsed),
        BRGMModel("heavy-tail", heavy_tail.model),
        BRGMModel("no-colinear", no_colinear.model),
        BRGMModel("reach", reach.model, needs_reach=True),
        BRGMModel("unknown-blur", unknown_blur.model, corruption=unknown_blur.corruption),
        BRGMModel("mapping", mapping.model, needs_reach=True, start=mapping.start),
    )
}


def available_models() -> list[str]:
    """The registered model names."""
    return list(MODELS)


def register_model(name: str, model: Callable | BRGMModel, overwrite: bool = False) -> None:
    """Make ``get_model(name)`` return ``model``: a :class:`BRGMModel`, or a Pyro function with the
    signature of ``brgm.model``."""
    if not callable(model) and not isinstance(model, BRGMModel):
        raise InputTypeError(f"register_model needs a callable Pyro model, got {type(model).__name__}.")
    if name in MODELS and not overwrite:
        raise InputError(f"A model named {name!r} is already registered; pass overwrite=True to replace it.")
    spec = model if isinstance(model, BRGMModel) else BRGMModel(name, model)
    MODELS[name] = BRGMModel(name, spec.model, spec.collapsed, spec.corruption, spec.needs_reach, spec.start)


def get_model(model: str | Callable | BRGMModel | None) -> BRGMModel:
    """A model by registered name, a registered model's function, a ``BRGMModel``, a user's Pyro function
    (with none of the extras), or ``brgm`` for None."""
    if model is None:
        return MODELS["brgm"]
    if isinstance(model, BRGMModel):
        return model
    if isinstance(model, str):
        if model not in MODELS:
            raise InputError(f"Unknown model {model!r}; choose one of: {', '.join(MODELS)}, or pass a Pyro model.")
        return MODELS[model]
    for spec in MODELS.values():
        if spec.model is model:
            return spec
    return BRGMModel.of(model)


def choose(
    model: str | Callable | BRGMModel | None,
    sigma_reach: float | str | None,
    forward: nn.Module,
    card_reach: float | None,
    clean_shape: Sequence[int],
    device: object = "cpu",
) -> tuple[BRGMModel, float | None, tuple[str, ...]]:
    """The model and the reach a posterior runs with, and the notes a user should read about the choice.

    ``sigma_reach="auto"`` is the prior card's reach (``card_reach``), off for a model that infers
    the corruption and for an f without structure (not a linear ``Operator``: the reach needs its
    adjoint and F F^T); None or 0 is off; a positive number needs a model with a known f and an f
    with structure (else one sentence). ``model="auto"`` is "reach" when there is a reach and
    "learned-noise" otherwise (a note says why where the prior has a reach that f cannot carry).
    A model whose likelihood holds the reach (``needs_reach``) without one gets one sentence.
    """
    spec = None if isinstance(model, str) and model == "auto" else get_model(model)
    infers_corruption = spec is not None and spec.infers_corruption
    notes: list[str] = []
    if sigma_reach == "auto":
        sigma_reach = None if infers_corruption else card_reach
        if sigma_reach and not has_structure(forward):
            notes.append(
                f"The prior's reach is left out: f ({type(forward).__name__}) is not a linear brgm_pyro.forward.Operator, "
                "whose adjoint and F F^T the reach needs; the noise level is inferred instead (learned-noise)."
            )
            sigma_reach = None
    elif isinstance(sigma_reach, (bool, str)) or not (sigma_reach is None or 0 <= sigma_reach < math.inf):
        raise InputError(
            f"sigma_reach must be 'auto', None, 0 or a positive number (std per clean pixel), got {sigma_reach!r}."
        )
    elif sigma_reach:
        if infers_corruption:
            raise InputError(
                f"The model {spec.name} infers the corruption, but the reach term (sigma_reach) needs f known; "
                "pass sigma_reach=None."
            )
        check_linear(forward, tuple(clean_shape), device=device)
    sigma_reach = float(sigma_reach) if sigma_reach else None
    if spec is None:
        spec = MODELS["reach" if sigma_reach else "learned-noise"]
    if spec.needs_reach and not sigma_reach:
        raise InputError(
            f"model={spec.name!r} needs the prior's reach (params.sigma_reach > 0), and there is none: the prior's card "
            "has no sigma_reach, or sigma_reach=None was given; pass sigma_reach, or use model='learned-noise'."
        )
    return spec, sigma_reach, tuple(notes)
