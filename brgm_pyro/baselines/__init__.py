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
pulse          super-res.      PULSE on G, latents on spheres (:mod:`.pulse`)
projector      both            StyleGAN2's projector through f (:mod:`.projector`)
brgm           both            BRGM's MAP, ``bp.reconstruct`` (:mod:`.brgm`)
brgm-mean      both            BRGM's posterior mean, ``bp.sample_posterior`` (:mod:`.brgm`)
dps            both            diffusion posterior sampling, deepinv's DPS (:mod:`.diffusion`)
diffpir        both            diffusion plug-and-play, deepinv's DiffPIR (:mod:`.diffusion`)
tv             both            total-variation least squares, deepinv's PGD (:mod:`.tv`)
dip            both            the deep image prior, deepinv's DeepImagePrior (:mod:`.dip`)
=============  ==============  ===============================================================

dps, diffpir, tv and dip run on deepinv, an optional package (``pip install brgm-pyro[deepinv]``);
without it they raise InputError saying so. dps and diffpir sample with the diffusion denoiser of
:mod:`.denoiser`, trained on the same Fashion-MNIST split as the embedded prior.

``tasks(name)`` says which tasks ("superres", "inpaint") a method is made for; ``unavailable(name)``
says why a method cannot run here (its optional package is missing), or None.

Example:
    >>> import torch
    >>> from brgm_pyro import baselines
    >>> from brgm_pyro.forward import Downsample
    >>> baselines.available()
    ('bicubic', 'biharmonic', 'supervised', 'pulse', 'projector', 'brgm', 'brgm-mean', 'dps', 'diffpir', 'tv', 'dip')
    >>> method = baselines.get("bicubic")
    >>> method(torch.rand(2, 1, 8, 8), Downsample(4)).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from brgm_pyro.baselines.bicubic import bicubic
from brgm_pyro.baselines.biharmonic import biharmonic
from brgm_pyro.baselines.brgm import brgm_map, brgm_mean
from brgm_pyro.baselines.diffusion import diffpir, dps
from brgm_pyro.baselines.dip import dip
from brgm_pyro.baselines.projector import projector
from brgm_pyro.baselines.pulse import pulse
from brgm_pyro.baselines.supervised import supervised
from brgm_pyro.baselines.tv import tv
from brgm_pyro.errors import InputError, InputTypeError

__all__ = ["Method", "available", "get", "tasks", "unavailable"]

Method = Callable[..., torch.Tensor]

_METHODS: dict[str, Method] = {
    "bicubic": bicubic,
    "biharmonic": biharmonic,
    "supervised": supervised,
    "pulse": pulse,
    "projector": projector,
    "brgm": brgm_map,
    "brgm-mean": brgm_mean,
    "dps": dps,
    "diffpir": diffpir,
    "tv": tv,
    "dip": dip,
}
_TASKS: dict[str, tuple[str, ...]] = {
    "bicubic": ("superres",),
    "biharmonic": ("inpaint",),
    "supervised": ("superres", "inpaint"),
    "pulse": ("superres",),
    "projector": ("superres", "inpaint"),
    "brgm": ("superres", "inpaint"),
    "brgm-mean": ("superres", "inpaint"),
    "dps": ("superres", "inpaint"),
    "diffpir": ("superres", "inpaint"),
    "tv": ("superres", "inpaint"),
    "dip": ("superres", "inpaint"),
}


# Method -> the optional package it runs on (the extra that installs it: brgm-pyro[deepinv]).
_REQUIRES: dict[str, str] = {"dps": "deepinv", "diffpir": "deepinv", "tv": "deepinv", "dip": "deepinv"}


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


def tasks(name: str) -> tuple[str, ...]:
    """The tasks ("superres", "inpaint") the method registered as ``name`` is made for."""
    get(name)
    return _TASKS[name]


def unavailable(name: str) -> str | None:
    """Why the method registered as ``name`` cannot run here (one sentence), or None when it can."""
    get(name)
    package = _REQUIRES.get(name)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return (f"The method {name} runs on {package}, which is not installed; install it with "
            f"`pip install 'brgm-pyro[{package}]'`.")
