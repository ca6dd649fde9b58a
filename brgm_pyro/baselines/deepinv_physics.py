"""deepinv, the optional package of the dps, diffpir, tv and dip baselines: its lazy import, and our f as its physics.

deepinv (``pip install brgm-pyro[deepinv]``) is imported only when one of those baselines runs, so that
brgm-pyro works without it; :func:`require_deepinv` says in one sentence how to install it.

:func:`as_physics` gives deepinv's solvers a corruption f of :mod:`brgm_pyro.forward` as a
``deepinv.physics.LinearPhysics``: A = f, and A_adjoint the adjoint deepinv derives from A by automatic
differentiation (the vector-Jacobian product of the linear map f, ``deepinv.physics.adjoint_function``),
for clean images of shape (C, H, W). Noise-free, as the inputs of ``brgm evaluate`` are (8-bit PNGs of
f(x)); the noise level a solver assumes is that solver's own option.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from brgm_pyro.errors import InputError
from brgm_pyro.forward import Operator

__all__ = ["as_physics", "require_deepinv"]


def require_deepinv() -> ModuleType:
    """The deepinv package, or one sentence saying how to install it."""
    try:
        return importlib.import_module("deepinv")
    except ImportError:
        raise InputError(
            "This baseline runs on deepinv, which is not installed; install it with "
            "`pip install 'brgm-pyro[deepinv]'` (deepinv 0.5)."
        ) from None


def as_physics(f: Operator, shape: torch.Size):
    """f as a noise-free ``deepinv.physics.LinearPhysics`` on clean images of ``shape`` (B, C, H, W)."""
    deepinv = require_deepinv()
    return deepinv.physics.LinearPhysics(A=f, img_size=tuple(shape[1:]))
