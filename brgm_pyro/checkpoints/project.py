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

import inspect
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from brgm_pyro.checkpoints.build import infer_config
from brgm_pyro.errors import CheckpointError, InputError
from brgm_pyro.io import atomic_path, parse_json
from brgm_pyro.stylegan2 import StyleGAN2Generator

__all__ = ["FORMAT", "load_project_checkpoint", "save_generator"]

FORMAT = "brgm-pyro-generator/1"
# The config's fields that are real numbers (conv_clamp may also be null); the others are integers.
_REAL_FIELDS = ("mapping_lr_multiplier", "conv_clamp")
# The fields that fix the tensors' names and shapes, and the defaults of StyleGAN2Generator for them.
_SHAPE_FIELDS = ("resolution", "channels", "z_dim", "w_dim", "mapping_layers")
_DEFAULTS = {name: p.default for name, p in inspect.signature(StyleGAN2Generator).parameters.items()}


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


def _read_project_file(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """The file's tensor shapes by name, and its header metadata; no tensor data is read."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({err}); re-download or re-convert it."
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a brgm-pyro generator (no {FORMAT!r} header); "
            "convert foreign checkpoints with `brgm convert`."
        )
    return shapes, metadata


def _header_json(metadata: dict[str, str], key: str, default: str, path: Path) -> dict[str, Any]:
    try:
        value = parse_json(metadata.get(key, default), f"The {key!r} header entry of {path}", "re-create the file.")
    except InputError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(value, dict):
        raise CheckpointError(f"The {key!r} header entry of {path} is not a JSON object; the file is corrupt, re-create it.")
    return value


def _check_config(config: dict[str, Any], shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    """Refuse a config that is not the one of the file's tensors, before anything is built.

    The architecture is inferred from the tensor shapes (as for a foreign file) and compared with the
    config, so that a header whose config claims a huge generator costs nothing: the generator that is
    then built has the file's own size.
    """
    unknown = sorted(set(config) - set(_DEFAULTS) | set(config) & {"seed", "compute_stats"})
    if unknown:
        raise CheckpointError(f"{path} has {unknown[0]!r} in its header config, which is no setting of a generator; "
                              "the file is corrupt, re-create it.")
    for key, value in config.items():
        allowed = (type(None), int, float) if key == "conv_clamp" else (int, float) if key in _REAL_FIELDS else (int,)
        if not isinstance(value, allowed) or isinstance(value, bool) or not math.isfinite(value or 0):
            raise CheckpointError(f"{path} has {key} = {value!r} in its header config; the file is corrupt, re-create it.")
    inferred = infer_config({name: SimpleNamespace(shape=shape) for name, shape in shapes.items()}, path)
    differs = [k for k in _SHAPE_FIELDS if config.get(k, _DEFAULTS.get(k)) != inferred[k]]
    if differs:
        what = f"{differs[0]} {config.get(differs[0])!r} where its tensors say {inferred[differs[0]]}"
    else:  # the same resolution: compare the feature maps per block
        blocks = range(2, int(math.log2(inferred["resolution"])) + 1)
        maps = [[min(c["channel_base"] // 2**i, c["channel_max"]) for i in blocks] for c in (inferred, {**_DEFAULTS, **config})]
        what = f"feature maps {maps[1]} where its tensors have {maps[0]}" if maps[0] != maps[1] else ""
    if what:
        raise CheckpointError(f"{path} does not match its own config ({what}); the file is corrupt, re-create it.")


def load_project_checkpoint(path: str | Path) -> StyleGAN2Generator:
    """Load a generator saved by :func:`save_generator` (in eval mode; ``G.info`` is its provenance).

    The header (config and tensor shapes) is checked before any tensor is read or built.
    """
    path = Path(path)
    shapes, metadata = _read_project_file(path)
    config = _header_json(metadata, "brgm_pyro.config", "", path)
    info = _header_json(metadata, "brgm_pyro.info", "{}", path)
    card = _header_json(metadata, "brgm_pyro.card", "{}", path) if "brgm_pyro.card" in metadata else None
    _check_config(config, shapes, path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({err}); re-download or re-convert it.") from None
    G = StyleGAN2Generator(**config, compute_stats=False)
    try:
        G.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path} does not match its own config ({str(err).splitlines()[-1].strip()}); the file is corrupt, re-create it."
        ) from None
    G.info = info
    if card is not None:
        G.card = card
    G.source_format = "brgm-safetensors"
    return G.eval()
