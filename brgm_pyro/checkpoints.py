"""Generator checkpoints: the project's safetensors format, and loading by name or path.

Project format: one ``.safetensors`` file holding the generator's state dictionary (NVIDIA
parameter names, see ``stylegan2.py``) whose header metadata carries two JSON strings:
``brgm_pyro.config`` (the constructor arguments) and ``brgm_pyro.info`` (free-form provenance:
data, images seen, ...). The prior statistics ``w_avg`` and ``w_std`` are ordinary buffers of the
state dictionary. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from brgm_pyro.errors import CheckpointError, InputError
from brgm_pyro.io import atomic_path
from brgm_pyro.stylegan2 import StyleGAN2Generator

__all__ = ["save_generator", "load_generator", "registered_priors", "prior_card", "PRIORS_DIR"]

FORMAT = "brgm-pyro-generator/1"
PRIORS_DIR = Path(__file__).resolve().parent / "priors"



def save_generator(G: StyleGAN2Generator, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write G to ``path`` (.safetensors) atomically; ``info`` is stored as JSON metadata."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"Generator checkpoints are saved as .safetensors; got {path.name!r}, rename it.")
    state = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "brgm_pyro.config": json.dumps(G.config),
        "brgm_pyro.info": json.dumps(info or {}),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def _read_project_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({err}); re-download or re-convert it."
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a brgm-pyro generator (no {FORMAT!r} header); "
            "convert foreign checkpoints with `brgm convert`."
        )
    return state, metadata


def load_project_checkpoint(path: str | Path, device: str | torch.device | None = None) -> StyleGAN2Generator:
    """Load a generator saved by :func:`save_generator`."""
    path = Path(path)
    state, metadata = _read_project_file(path)
    config = json.loads(metadata["brgm_pyro.config"])
    G = StyleGAN2Generator(**config, compute_stats=False)
    missing, unexpected = G.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match its own config (missing {sorted(missing)[:3]}, unexpected "
            f"{sorted(unexpected)[:3]}); the file is corrupt, re-create it."
        )
    G.info = json.loads(metadata.get("brgm_pyro.info", "{}"))
    return _finish(G, device)


def _finish(G: StyleGAN2Generator, device: str | torch.device | None) -> StyleGAN2Generator:
    G.eval().requires_grad_(False)
    return G.to(device) if device is not None else G


def registered_priors() -> dict[str, Path]:
    """Priors that ship inside the package, by name."""
    return {p.stem: p for p in sorted(PRIORS_DIR.glob("*.safetensors"))}


def prior_card(name: str) -> dict[str, Any]:
    """The model card (JSON) of a shipped prior: data, training, defaults, quality figures."""
    card = PRIORS_DIR / f"{name}.json"
    return json.loads(card.read_text()) if card.exists() else {}


def load_generator(name_or_path: str | Path, device: str | torch.device | None = None) -> StyleGAN2Generator:
    """Load a generator by registered name (e.g. ``"fashion-mnist-32"``) or by path.

    Paths: the project's ``.safetensors``; NVIDIA ``.pkl`` (PyTorch or the original TensorFlow) and
    rosinality ``.pt`` files are read through :mod:`brgm_pyro.importers` (restricted unpickling,
    nothing in them is executed). Public priors (``importers.PUBLIC_PRIORS``) download on first use.
    The generator is returned frozen (``eval()``, ``requires_grad_(False)``).
    """
    shipped = registered_priors()
    key = str(name_or_path)
    if key in shipped:
        G = load_project_checkpoint(shipped[key], device)
        G.name = key
        G.card = prior_card(key)
        return G
    path = Path(name_or_path).expanduser()
    if not path.exists():
        from brgm_pyro import importers

        if key in importers.PUBLIC_PRIORS:
            return _finish(importers.load_public_prior(key), device)
        names = sorted(shipped) + sorted(importers.PUBLIC_PRIORS)
        raise FileNotFoundError(
            f"No generator file at {path} and no registered prior of that name; give a checkpoint path "
            f"or one of: {', '.join(names)}."
        )
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint file inside it.")
    if path.suffix == ".safetensors":
        return load_project_checkpoint(path, device)
    from brgm_pyro import importers

    return _finish(importers.load_foreign(path), device)
