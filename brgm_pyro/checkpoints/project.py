"""The project's own checkpoint format: a generator as one ``.safetensors`` file, written and read without pickles.

The file holds the generator's state dictionary (NVIDIA parameter names, see ``stylegan2.py``); its
header metadata carries ``format`` (``brgm-pyro-generator/1``) and JSON strings:
``brgm_pyro.config`` (the constructor arguments), ``brgm_pyro.info`` (free-form provenance:
data, images seen, what a converted file was recognised as, ...) and, for a generator that has one,
``brgm_pyro.card`` (its prior card, ``G.card``: the tuned settings that ``brgm_pyro.card.PriorCard``
reads, so that a saved or converted prior reconstructs as its name does). The prior statistics
``w_avg`` and ``w_std`` are ordinary buffers of the state dictionary. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from brgm_pyro.errors import CheckpointError, InputError
from brgm_pyro.io import atomic_path
from brgm_pyro.stylegan2 import StyleGAN2Generator

__all__ = ["FORMAT", "load_project_checkpoint", "save_generator"]

FORMAT = "brgm-pyro-generator/1"


def save_generator(G: StyleGAN2Generator, path: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write G to ``path`` (.safetensors) atomically; ``info`` and G's card (``G.card``, if any) are stored as
    JSON metadata."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"Generator checkpoints are saved as .safetensors; got {path.name!r}, rename it.")
    state = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "brgm_pyro.config": json.dumps(G.config),
        "brgm_pyro.info": json.dumps(info or {}),
    }
    card = getattr(G, "card", None)
    if card:
        metadata["brgm_pyro.card"] = json.dumps(card)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def _read_project_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
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


def load_project_checkpoint(path: str | Path) -> StyleGAN2Generator:
    """Load a generator saved by :func:`save_generator` (in eval mode; ``G.info`` is its provenance)."""
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
    if "brgm_pyro.card" in metadata:
        card = json.loads(metadata["brgm_pyro.card"])
        if not isinstance(card, dict):
            raise CheckpointError(f"{path} holds a prior card that is not a JSON object; the file is corrupt, re-create it.")
        G.card = card
    G.source_format = "brgm-safetensors"
    return G.eval()
