"""NVIDIA's PyTorch pickles (stylegan2-ada-pytorch, stylegan3): which network a pickle holds, told from its record, and its StyleGAN2 weights.

Format (``torch_utils/persistence.py``, ``training/training_loop.py`` of both repositories): a
``pickle.dump`` of a dict with ``G``, ``D``, ``G_ema``, ``augment_pipe`` and ``training_set_kwargs``.
Each network is written as a call of ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
with ``meta = {type: "class", version, module_src, class_name, state}``: the *bare* class name
(``"Generator"`` for StyleGAN2 and StyleGAN3 alike), the whole source text of its module, and its
``__dict__`` (see :class:`~brgm_pyro.checkpoints.unpickler.PersistentObject`).

Identification, from what the record is and never by running it (:func:`identify`):

* the recorded source text is searched for markers: every one of :data:`STYLEGAN2_MARKERS` (the
  classes and function of StyleGAN2's ``networks.py`` / ``networks_stylegan2.py``), any of
  :data:`STYLEGAN3_MARKERS` (``networks_stylegan3.py``); :data:`STYLEGAN3_RELEASE_MARKER` tells the
  stylegan3 release's ``networks_stylegan2.py`` from stylegan2-ada-pytorch's ``networks.py``;
* the state must agree: a ``mapping`` (``MappingNetwork`` with ``fc0``, ...) and a ``synthesis``
  (``SynthesisNetwork`` whose parts are the blocks ``b4``, ``b8``, ...), where StyleGAN3 has
  ``input`` and layers named ``L{i}_{size}_{channels}``.

The tensors already carry our names and shapes (``stylegan2.py`` follows NVIDIA's parameter
names); ``resample_filter`` buffers are checked to be the [1, 3, 3, 1] filter and dropped.
Settings are read from the layers' own attributes (``architecture`` of each block, ``conv_clamp``
of each layer, ``bias_gain`` of the mapping), which both layouts of ``_init_kwargs`` share:
stylegan2-ada-pytorch nests the synthesis settings under ``synthesis_kwargs``, stylegan3 keeps
them at the top level.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from brgm_pyro.checkpoints.build import SUPPORTED, Foreign, as_float, check_filter, plain
from brgm_pyro.checkpoints.unpickler import PersistentObject, unpickle
from brgm_pyro.errors import CheckpointError
from brgm_pyro.stylegan2 import fir_filter

__all__ = ["STYLEGAN2_MARKERS", "STYLEGAN3_MARKERS", "STYLEGAN3_RELEASE_MARKER", "identify", "read_nvidia"]

#: Text that the module source of a StyleGAN2 generator contains, every one of them.
STYLEGAN2_MARKERS = (
    "class MappingNetwork(",
    "class SynthesisBlock(",
    "class ToRGBLayer(",
    "def modulated_conv2d(",
)
#: Text that only the source of StyleGAN3's ``networks_stylegan3.py`` contains (any one of them).
STYLEGAN3_MARKERS = ("class SynthesisInput(", "filtered_lrelu")
#: An argument that stylegan3's ``networks_stylegan2.py`` has and stylegan2-ada-pytorch's ``networks.py`` lacks.
STYLEGAN3_RELEASE_MARKER = "fused_modconv_default"

#: How deep sub-networks may nest in a record (StyleGAN2: 4).
MAX_DEPTH = 16

_ARCHITECTURES = {
    "orig": "no skip connections, one ToRGB layer after the last block",
    "resnet": "residual synthesis blocks",
}


def _kind_from_source(source: str) -> str:
    if any(marker in source for marker in STYLEGAN3_MARKERS):
        return "stylegan3"
    return "stylegan2" if all(marker in source for marker in STYLEGAN2_MARKERS) else "unknown"


def _kind_from_state(G: PersistentObject) -> str:
    mapping, synthesis = G.modules.get("mapping"), G.modules.get("synthesis")
    if not (isinstance(mapping, PersistentObject) and isinstance(synthesis, PersistentObject)):
        return "unknown"
    parts = list(synthesis.modules)
    if "input" in parts and any(re.fullmatch(r"L\d+_\d+_\d+", name) for name in parts):
        return "stylegan3"
    blocks = [f"b{2**i}" for i in range(2, 2 + len(parts))]
    is_stylegan2 = (
        mapping.class_name == "MappingNetwork"
        and "fc0" in mapping.modules
        and synthesis.class_name == "SynthesisNetwork"
        and parts == blocks
        and all(getattr(synthesis.modules[b], "class_name", None) == "SynthesisBlock" for b in blocks)
    )
    return "stylegan2" if is_stylegan2 else "unknown"


def identify(G: PersistentObject, path: Path) -> str:
    """The implementation that wrote the StyleGAN2 generator ``G``, from its recorded source and state.

    Returns ``"stylegan2-ada-pytorch"`` or ``"stylegan3"`` (the release's ``networks_stylegan2.py``);
    raises :class:`CheckpointError` naming what ``G`` is when it is a StyleGAN3 or any other network.
    """
    kinds = {_kind_from_source(G.module_src), _kind_from_state(G)}
    if "stylegan3" in kinds:
        variant = "StyleGAN3-R" if G.init_kwargs().get("use_radial_filters") else "StyleGAN3-T"
        raise CheckpointError(
            f"{path} holds a {variant} (alias-free) generator from NVIDIA's stylegan3 "
            f"training/networks_stylegan3.py, which is not a StyleGAN2 network; only {SUPPORTED} are "
            "supported, so give one of those."
        )
    if G.class_name != "Generator" or kinds != {"stylegan2"}:
        classes = re.findall(r"^class (\w+)", G.module_src, flags=re.MULTILINE)[:5]
        raise CheckpointError(
            f"{path} holds a network recorded as '{G.class_name}' (its source defines "
            f"{', '.join(classes) or 'no classes'}; its parts are {', '.join(G.modules) or 'none'}), which "
            f"is not a StyleGAN2 generator; only {SUPPORTED} are supported."
        )
    return "stylegan3" if STYLEGAN3_RELEASE_MARKER in G.module_src else "stylegan2-ada-pytorch"


def _flatten(obj: PersistentObject, prefix: str, tensors: dict[str, Any], layers: dict[str, Any]) -> None:
    """Every parameter and buffer by its dotted name, and every sub-network's state by its name.

    StyleGAN2's sub-networks nest four deep (``synthesis.b8.conv0.affine``); a record nested deeper than
    :data:`MAX_DEPTH` is refused before it can exhaust Python's recursion.
    """
    if prefix.count(".") > MAX_DEPTH:
        raise CheckpointError(
            f"The network nests sub-networks more than {MAX_DEPTH} levels deep ({prefix[:60]}...), where "
            "StyleGAN2's go four deep; the file is not supported."
        )
    layers[prefix.rstrip(".")] = obj.state
    for group in ("_parameters", "_buffers"):
        for name, tensor in (obj.state.get(group) or {}).items():
            if tensor is not None:
                tensors[prefix + name] = tensor
    for name, child in obj.modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(
                f"The sub-network {prefix + name} is not a StyleGAN2 layer; the file is not supported."
            )
        _flatten(child, f"{prefix}{name}.", tensors, layers)


def _check_architecture(layers: dict[str, Any], kwargs: dict[str, Any], path: Path) -> None:
    # stylegan2-ada-pytorch nests the synthesis settings, stylegan3 keeps them at the top level.
    synthesis_kwargs = dict(kwargs.get("synthesis_kwargs") or kwargs)
    found = [synthesis_kwargs.get("architecture")]
    found += [
        state.get("architecture") for name, state in layers.items() if re.fullmatch(r"synthesis\.b\d+", name)
    ]
    other = sorted({plain(a) for a in found if a is not None} - {"skip"})
    if other:
        meaning = _ARCHITECTURES.get(other[0], "not one of StyleGAN2's")
        raise CheckpointError(
            f"{path} is a StyleGAN2 generator with the '{other[0]}' synthesis architecture ({meaning}); "
            "only the 'skip' architecture (StyleGAN2's default, configs e and f) is supported."
        )


def _conv_clamp(layers: dict[str, Any], path: Path) -> float | None:
    clamps = {
        plain(state["conv_clamp"])
        for name, state in layers.items()
        if re.fullmatch(r"synthesis\.b\d+\.(conv0|conv1|torgb)", name) and "conv_clamp" in state
    }
    if len(clamps) > 1:
        raise CheckpointError(
            f"{path} clamps its layers to different values {sorted(map(str, clamps))}; not supported."
        )
    return clamps.pop() if clamps else None


def read_nvidia(path: Path) -> Foreign:
    """The StyleGAN2 generator ``G_ema`` of an NVIDIA PyTorch pickle, in our names (nothing in it runs)."""
    data = unpickle(path, "nvidia-pkl")
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentObject):
        raise CheckpointError(
            f"{path} is an NVIDIA pickle without a 'G_ema' generator; give a generator snapshot."
        )
    G = data["G_ema"]
    implementation = identify(G, path)
    kwargs = G.init_kwargs()
    tensors: dict[str, Any] = {}
    layers: dict[str, Any] = {}
    _flatten(G, "", tensors, layers)
    if G.state.get("c_dim", kwargs.get("c_dim")) or any(k.startswith("mapping.embed.") for k in tensors):
        raise CheckpointError(
            f"{path} is a conditional (class-label) generator; only unconditional generators can be priors."
        )
    _check_architecture(layers, kwargs, path)
    activations = {
        state.get("activation")
        for name, state in layers.items()
        if re.fullmatch(r"mapping\.fc\d+|synthesis\.b\d+\.conv[01]", name)
    }
    if activations - {"lrelu", None}:
        raise CheckpointError(
            f"{path} uses the activation {sorted(map(str, activations - {'lrelu', None}))[0]!r} where StyleGAN2 "
            "uses leaky ReLU ('lrelu'); this variant is not supported."
        )
    for key in [k for k in tensors if k.endswith(".resample_filter")]:
        check_filter(tensors.pop(key), fir_filter(), path, key)
    state = {k: as_float(v, path, k) for k, v in tensors.items()}
    lr_mul = plain((layers.get("mapping.fc0") or {}).get("bias_gain", 0.01))
    source = {
        "stylegan2-ada-pytorch": "NVIDIA stylegan2-ada-pytorch pickle",
        "stylegan3": "NVIDIA stylegan3 pickle (networks_stylegan2.py)",
    }[implementation]
    settings = {"conv_clamp": _conv_clamp(layers, path), "mapping_lr_multiplier": float(lr_mul)}
    return Foreign(state, settings, source)
