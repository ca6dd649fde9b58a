"""Generator checkpoints, the entry points: load a generator by prior name or by path, save one, list the shipped priors.

    G = load_generator("fashion-mnist-32")          # a prior shipped in brgm_pyro/priors
    G = load_generator("ffhq-1024")                 # a published prior, downloaded on first use
    G = load_generator("network-snapshot.pkl")      # NVIDIA .pkl (PyTorch or TensorFlow), rosinality .pt
    save_generator(G, "prior.safetensors")          # the project's format, never a pickle

Where each part lives: ``project.py`` (the project's safetensors format), ``sniff.py`` (telling
formats apart), ``unpickler.py`` (the restricted unpickler), ``nvidia.py``, ``tensorflow.py`` and
``rosinality.py`` (the foreign formats), ``build.py`` (from their tensors to a generator),
``public.py`` with ``public_priors.json`` (the published priors, their download and checksums).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from brgm_pyro.checkpoints.build import Foreign, build_generator
from brgm_pyro.checkpoints.nvidia import read_nvidia
from brgm_pyro.checkpoints.project import load_project_checkpoint, save_generator
from brgm_pyro.checkpoints.public import PUBLIC_PRIORS, fetch_public_prior, public_prior_path
from brgm_pyro.checkpoints.rosinality import read_rosinality
from brgm_pyro.checkpoints.sniff import FORMATS, sniff_format
from brgm_pyro.checkpoints.tensorflow import read_tensorflow
from brgm_pyro.errors import CheckpointError, InputError
from brgm_pyro.io import read_json
from brgm_pyro.stylegan2 import StyleGAN2Generator

__all__ = [
    "FORMATS",
    "PRIORS_DIR",
    "PUBLIC_PRIORS",
    "CheckpointError",
    "load_foreign",
    "load_generator",
    "load_public_prior",
    "prior_card",
    "public_prior_path",
    "registered_priors",
    "save_generator",
    "sniff_format",
]

PRIORS_DIR = Path(__file__).resolve().parent.parent / "priors"

# What reading a foreign file's records raises where they are not what the format writes (RecursionError,
# a RuntimeError, for records nested beyond Python's recursion).
_STRUCTURE_ERRORS = (KeyError, IndexError, ValueError, TypeError, AttributeError, RuntimeError, OverflowError)

_READERS: dict[str, Callable[[Path], Foreign]] = {
    "nvidia-pkl": read_nvidia,
    "tf-pkl": read_tensorflow,
    "rosinality-pt": read_rosinality,
}


def registered_priors() -> dict[str, Path]:
    """Priors that ship inside the package, by name."""
    return {p.stem: p for p in sorted(PRIORS_DIR.glob("*.safetensors"))}


def prior_card(name: str) -> dict[str, Any]:
    """The model card (JSON) of a shipped prior: data, training, defaults, quality figures."""
    card = PRIORS_DIR / f"{name}.json"
    return read_json(card, "prior card", "reinstall brgm-pyro to restore it.") if card.exists() else {}


def load_foreign(path: str | os.PathLike) -> StyleGAN2Generator:
    """Load a generator file of any supported format, told from its content (:func:`sniff_format`).

    NVIDIA pickles go through the restricted unpickler (nothing in them runs), rosinality files
    through PyTorch's weights-only loader. The generator comes back in eval mode with
    ``w_avg``/``w_std`` computed, ``source_format`` set and ``G.info["recognised"]`` saying in one
    line what the file was recognised as. Raises :class:`CheckpointError` for truncated, foreign,
    unsafe or unsupported files.
    """
    path = Path(path)
    fmt = sniff_format(path)
    if fmt == "brgm-safetensors":
        return load_project_checkpoint(path)
    try:
        return build_generator(_READERS[fmt](path), path, fmt)
    except InputError:  # the readers' own sentences (InputError is a ValueError too)
        raise
    except _STRUCTURE_ERRORS as err:
        # The readers walk the records of an untrusted file: a key, a shape or a type that is not where the
        # format puts it makes the file not one of that format (the round trips of tests/ cover the files that are).
        raise CheckpointError(
            f"{path} has the signature of a {fmt} file but not its structure ({type(err).__name__}: "
            f"{str(err)[:160]}); the file is corrupt or of an unsupported variant."
        ) from None


def load_public_prior(name: str) -> StyleGAN2Generator:
    """A published generator of :data:`PUBLIC_PRIORS` by name, downloaded on first use.

    The file is checked against its checksum before it is read (see :mod:`~brgm_pyro.checkpoints.public`).
    The generator carries ``name`` and ``card`` (its registry entry, with the licence and the
    default perceptual network).
    """
    G = load_foreign(fetch_public_prior(name))
    G.name = name
    G.card = dict(PUBLIC_PRIORS[name])
    G.info = {**G.info, "prior": name, "url": G.card["url"], "licence": G.card["licence"]}
    return G


def _finish(G: StyleGAN2Generator, device: str | torch.device | None) -> StyleGAN2Generator:
    G.eval().requires_grad_(False)
    return G.to(device) if device is not None else G


def load_generator(name_or_path: str | Path, device: str | torch.device | None = None) -> StyleGAN2Generator:
    """Load a generator by registered name (e.g. ``"fashion-mnist-32"``, ``"ffhq-1024"``) or by path.

    Paths: the project's ``.safetensors``; NVIDIA ``.pkl`` (PyTorch or the original TensorFlow) and
    rosinality ``.pt`` files (see :func:`load_foreign`). Public priors (:data:`PUBLIC_PRIORS`)
    download on first use. The generator is returned frozen (``eval()``, ``requires_grad_(False)``).
    """
    shipped = registered_priors()
    key = str(name_or_path)
    if key in shipped:
        G = load_project_checkpoint(shipped[key])
        G.name = key
        G.card = prior_card(key)
        return _finish(G, device)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        if key in PUBLIC_PRIORS:
            return _finish(load_public_prior(key), device)
        names = sorted(shipped) + sorted(PUBLIC_PRIORS)
        raise FileNotFoundError(
            f"No generator file at {path} and no registered prior of that name; give a checkpoint path "
            f"or one of: {', '.join(names)}."
        )
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint file inside it.")
    if path.suffix == ".safetensors":
        return _finish(load_project_checkpoint(path), device)
    return _finish(load_foreign(path), device)
