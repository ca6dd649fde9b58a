"""Competitors of BRGM, by name: ``get(name)`` returns ``method(y, f, G=None, **options) -> images``.

Every method follows the conventions of ``bp.reconstruct``: y is a float batch (B, C, h, w) in
[0, 1], f an operator of :mod:`brgm_pyro.forward`, G (optional for the methods that do not use a
generator) fixes the size of the images returned, (B, C, H, W) in [0, 1]. A method that does not
apply to f raises :class:`~brgm_pyro.errors.InputError`.

=============  ==============  ===============================================================
name           task            method
=============  ==============  ===============================================================
bicubic        super-res.      Pillow's bicubic upsampling (:mod:`.bicubic`)
biharmonic     inpainting      scikit-image's ``inpaint_biharmonic`` (:mod:`.biharmonic`)
supervised     both            networks trained on Fashion-MNIST pairs (:mod:`.supervised`)
=============  ==============  ===============================================================

Example:
    >>> import torch
    >>> from brgm_pyro import baselines
    >>> from brgm_pyro.forward import Downsample
    >>> baselines.available()
    ('bicubic', 'biharmonic', 'supervised')
    >>> method = baselines.get("bicubic")
    >>> method(torch.rand(2, 1, 8, 8), Downsample(4)).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from brgm_pyro.baselines.bicubic import bicubic
from brgm_pyro.baselines.biharmonic import biharmonic
from brgm_pyro.baselines.supervised import supervised
from brgm_pyro.errors import InputError, InputTypeError

__all__ = ["Method", "available", "get"]

Method = Callable[..., torch.Tensor]

_METHODS: dict[str, Method] = {"bicubic": bicubic, "biharmonic": biharmonic, "supervised": supervised}


def available() -> tuple[str, ...]:
    """The names of the registered methods."""
    return tuple(_METHODS)


def get(name: str) -> Method:
    """The method registered as ``name``: a callable ``method(y, f, G=None, **options)``."""
    if not isinstance(name, str):
        raise InputTypeError(f"A baseline is named by a string, got {type(name).__name__}; e.g. get('bicubic').")
    if name not in _METHODS:
        raise InputError(f"Unknown baseline {name!r}; choose one of {', '.join(_METHODS)}.")
    return _METHODS[name]
