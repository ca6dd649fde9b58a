"""The registry of BRGM models by name, for the API (``model="learned-noise"``) and the CLI (``--model``).

    brgm           the paper's model (``brgm.model``)
    learned-noise  sigma_pixel is a per-image latent with a conjugate prior (``learned_noise.model``)
    heavy-tail     Student-t prior on w (``heavy_tail.model``)
    no-colinear    no colinearity factor between the w_l (``no_colinear.model``)

Any Pyro model with the signature of ``brgm.model`` can be passed instead of a name, or registered
with :func:`register_model`.
"""

from __future__ import annotations

from collections.abc import Callable

from brgm_pyro.models import brgm, heavy_tail, learned_noise, no_colinear

from brgm_pyro.errors import InputError, InputTypeError

__all__ = ["MODELS", "available_models", "get_model", "model_name", "register_model"]

MODELS: dict[str, Callable] = {
    "brgm": brgm.model,
    "learned-noise": learned_noise.model,
    "heavy-tail": heavy_tail.model,
    "no-colinear": no_colinear.model,
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
