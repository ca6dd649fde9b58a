"""Import published StyleGAN2 generators: NVIDIA pickles (PyTorch and TensorFlow) and rosinality ``.pt``.

Nothing from a foreign file is executed. Pickles are read by a restricted unpickler that knows only
the few globals these formats use (tensor and array rebuilders, ``OrderedDict``, ``EasyDict``, the
stand-ins below) and refuses every other global by name. NVIDIA's persistent classes carry their
own Python source inside the pickle; it is kept as text and never run. The weights are then
renamed and rescaled onto :class:`~brgm_pyro.stylegan2.StyleGAN2Generator` (which uses NVIDIA's
PyTorch parameter names) and checked with ``load_state_dict(strict=True)``. The result has its
prior statistics ``w_avg``/``w_std`` computed and ``source_format`` set.

Formats (detected from the content, see :func:`sniff_format`):

``nvidia-pkl``
    ``pickle.dump`` of a dict with ``G``, ``D``, ``G_ema``, ``augment_pipe``, ``training_set_kwargs``
    (stylegan2-ada-pytorch, and stylegan3's StyleGAN2 configs). Each network is a call of
    ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {type, version,
    module_src, class_name, state}`` and ``state`` the module's ``__dict__`` (``_parameters``,
    ``_buffers``, ``_modules``, attributes, ``_init_kwargs``). Tensors arrive through their
    ``__reduce_ex__``: ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` with
    the storage as ``torch.storage._load_from_bytes(bytes)``, the bytes being a ``torch.save``
    of the storage, read here with ``torch.load(weights_only=True)``. The names and shapes are
    ours already; ``resample_filter`` buffers are checked to be the [1, 3, 3, 1] filter and dropped.

``tf-pkl``
    NVIDIA's TensorFlow StyleGAN2: a tuple ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network``
    whose pickled state holds ``name``, ``static_kwargs``, ``components`` (``mapping``,
    ``synthesis``), ``build_module_src``, ``build_func_name`` and ``variables``, a list of
    (name, numpy array). ``Gs`` (the moving average) is converted:

    ==========================================  ===================================  =================
    TensorFlow (scope/variable)                 ours                                 transform
    ==========================================  ===================================  =================
    G_mapping/Dense{i}/weight [in, out]         mapping.fc{i}.weight [out, in]       transpose
    G_mapping/Dense{i}/bias                     mapping.fc{i}.bias                   --
    Gs/dlatent_avg                              mapping.w_avg                        --
    G_synthesis/4x4/Const/const [1, C, 4, 4]    synthesis.b4.const [C, 4, 4]         drop batch axis
    G_synthesis/4x4/Conv/*                      synthesis.b4.conv1.*                 (layer rules)
    G_synthesis/{R}x{R}/Conv0_up/*              synthesis.b{R}.conv0.*               (layer rules), flip
    G_synthesis/{R}x{R}/Conv1/*                 synthesis.b{R}.conv1.*               (layer rules)
    G_synthesis/{R}x{R}/ToRGB/*                 synthesis.b{R}.torgb.*               (layer rules)
    G_synthesis/noise{j} [1, 1, R, R]           noise_const [R, R] of layer j        see below
    ==========================================  ===================================  =================

    layer rules: ``weight`` [k, k, I, O] (HWIO) -> [O, I, k, k]; ``mod_weight`` [w_dim, I] ->
    ``affine.weight`` [I, w_dim]; ``mod_bias`` + 1 -> ``affine.bias`` (TF adds the 1 at run
    time, we store it); ``bias`` -> ``bias``; ``noise_strength`` -> ``noise_strength``.
    ``Conv0_up`` kernels are flipped in both spatial axes: TF's ``upsample_conv_2d`` runs
    ``conv2d_transpose`` with the kernel reversed, ours runs ``conv_transpose2d`` with it as is.

``rosinality-pt``
    ``torch.save`` of ``{"g_ema": state_dict, "latent_avg": tensor, ...}`` from rosinality's
    stylegan2-pytorch (``convert_weight.py`` output; ``train.py`` checkpoints without
    ``latent_avg`` work too). Read with ``torch.load(weights_only=True)``.

    ==========================================  ===================================  =================
    rosinality                                  ours                                 transform
    ==========================================  ===================================  =================
    style.{i}.weight / bias (i = 1..n_mlp)      mapping.fc{i-1}.weight / bias        --
    latent_avg                                  mapping.w_avg                        --
    input.input [1, C, 4, 4]                    synthesis.b4.const [C, 4, 4]         drop batch axis
    conv1.*                                     synthesis.b4.conv1.*                 (layer rules)
    convs.{2j}.*   (R = 2^(j+3))                synthesis.b{R}.conv0.*               (layer rules)
    convs.{2j+1}.*                              synthesis.b{R}.conv1.*               (layer rules)
    to_rgb1.* / to_rgbs.{j}.*                   synthesis.b4.torgb.* / b{R}.torgb.*  (ToRGB rules)
    noises.noise_{j} [1, 1, R, R]               noise_const [R, R] of layer j        see below
    ==========================================  ===================================  =================

    layer rules: ``conv.weight`` [1, O, I, k, k] -> ``weight`` [O, I, k, k] times
    ``1 / sqrt(I k k)``; ``conv.modulation.weight`` / ``.bias`` -> ``affine.weight`` / ``.bias``
    (bias stored with its initial 1); ``noise.weight`` [1] -> ``noise_strength`` [];
    ``activate.bias`` -> ``bias``; ``conv.blur.kernel`` is checked and dropped.
    ToRGB rules: ``conv.weight`` [1, C, I, 1, 1] -> ``weight`` [C, I, 1, 1] as is;
    ``conv.modulation.*`` -> ``affine.*``; ``bias`` [1, C, 1, 1] -> ``bias`` [C];
    ``upsample.kernel`` is checked and dropped.

Noise index j (TF ``noise{j}``, rosinality ``noise_{j}``): 0 is b4.conv1, then ``2m + 1`` and
``2m + 2`` are conv0 and conv1 of resolution ``2^(m+3)``.

Scale conventions (why the factors above are right). Rosinality's ``EqualLinear`` stores
``W / lr_mul`` and applies ``W * lr_mul / sqrt(in)`` and ``b * lr_mul``; TF's ``dense_layer`` /
``apply_bias_act`` do the same with ``lrmul``: both equal our fully connected layer, so the mapping
and the affine (style) layers copy as they are (their ``lr_mul`` is 0.01 for the mapping and 1 for
the styles). Both formats apply the equalised-learning-rate constant ``1 / sqrt(I k k)`` to the
convolution weight at run time, *before* modulation and demodulation. For demodulated layers the
constant cancels up to the ``1e-8`` inside the square root; folding it into the stored weight
reproduces their arithmetic exactly, ``1e-8`` included. For ToRGB (no demodulation) their constant
``1 / sqrt(I)`` is exactly our ``weight_gain`` on the style, so those weights are copied as they are.
Their upsampling (transposed conv of stride 2, then the ``[1, 3, 3, 1]`` filter with gain 4 and
padding 1; skip images upsampled by zero insertion and the same filter with padding (2, 1)) is ours.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import math
import os
import pickle
import re
import struct
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from brgm_pyro.checkpoints import CheckpointError
from brgm_pyro.errors import InputError
from brgm_pyro.io import atomic_path
from brgm_pyro.stylegan2 import StyleGAN2Generator, fir_filter

__all__ = [
    "FORMATS",
    "PUBLIC_PRIORS",
    "load_foreign",
    "load_public_prior",
    "public_prior_path",
    "sniff_format",
]

FORMATS = ("nvidia-pkl", "tf-pkl", "rosinality-pt", "brgm-safetensors")

# How much of a file sniff_format reads: the globals of a pickle come before its tensors.
_SNIFF_BYTES = 1 << 20
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_NVIDIA_GENERATOR_CLASSES = ("training.networks.Generator", "training.networks_stylegan2.Generator")
_READ_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    RuntimeError,
    OverflowError,
    MemoryError,
    struct.error,
    zipfile.BadZipFile,
    UnicodeDecodeError,
)


# ----------------------------------------------------------------------------- sniffing


def sniff_format(path: str | os.PathLike) -> str:
    """The format of a generator file, from its content: one of :data:`FORMATS`.

    Raises :class:`CheckpointError` (one sentence) for empty, foreign or unsupported files.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint file inside it.")
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}; check the path.")
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    size = path.stat().st_size
    if not head:
        raise CheckpointError(f"{path} is empty; re-download or re-create it.")
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= size - 8:
            return "brgm-safetensors"
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    if head.startswith(_TORCH_LEGACY_MAGIC):
        if b"g_ema" in head:
            return "rosinality-pt"
        raise CheckpointError(
            f"{path} is a PyTorch checkpoint without a 'g_ema' generator, so not a rosinality "
            "StyleGAN2 file; convert it to a supported format."
        )
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        if b"torch_utils.persistence" in head or b"torch_utils\npersistence" in head:
            return "nvidia-pkl"
        if b"dnnlib.tflib.network" in head:
            return "tf-pkl"
        raise CheckpointError(
            f"{path} is a Python pickle but neither NVIDIA's PyTorch nor TensorFlow StyleGAN2 format, "
            "and pickles can run code, so it is not loaded; give a supported checkpoint."
        )
    raise CheckpointError(
        f"{path} is not a generator checkpoint (it looks like {_describe_foreign(head)}); give a "
        "StyleGAN2 .pkl (NVIDIA PyTorch or TensorFlow), a rosinality .pt or a brgm-pyro .safetensors file."
    )


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            data = archive.read(pickles[0]) if pickles else None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(
            f"{path} is a damaged zip archive ({err}); it is truncated or corrupt, re-download it."
        ) from None
    if data is None:
        raise CheckpointError(
            f"{path} is a zip archive but not a PyTorch checkpoint; give a generator checkpoint instead."
        )
    if b"g_ema" not in data:
        raise CheckpointError(
            f"{path} is a PyTorch checkpoint without a 'g_ema' generator, so not a rosinality "
            "StyleGAN2 file; convert it to a supported format."
        )
    return "rosinality-pt"


def _describe_foreign(head: bytes) -> str:
    signatures = {
        b"\x89PNG": "a PNG image",
        b"\xff\xd8\xff": "a JPEG image",
        b"GIF8": "a GIF image",
        b"\x1f\x8b": "a gzip archive",
        b"\x89HDF": "an HDF5 file (Keras?)",
        b"%PDF": "a PDF document",
        b"\x93NUMPY": "a numpy .npy array",
    }
    for magic, kind in signatures.items():
        if head.startswith(magic):
            return kind
    text = head.lstrip()[:1]
    if text in (b"{", b"["):
        return "a JSON document"
    if text == b"<":
        return "an HTML or XML page (a failed download?)"
    return "unknown binary data"


# ----------------------------------------------------------------------------- restricted unpickling


class _PersistentObject:
    """Stand-in for an instance of one of NVIDIA's persistent classes: its class name and state.

    The class's source code (``meta["module_src"]``) is dropped unread; nothing of it runs.
    """

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict[str, Any]) -> None:
        self.class_name, self.state = class_name, state


def _reconstruct_persistent_obj(meta: Any) -> _PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("a persistent-object record is not of type 'class'")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError("a persistent-object record has no state dictionary")
    return _PersistentObject(str(meta.get("class_name")), state)


class _TFNetwork:
    """Stand-in for ``dnnlib.tflib.network.Network``: keeps the pickled state dictionary only."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a TensorFlow network record has no state dictionary")
        self.state = state


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict); a subclass so that pickle's BUILD works."""


def _load_from_bytes(data: Any) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("a tensor storage record does not hold bytes")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("a tensor storage record does not hold a storage")
    return storage


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("a tensor record does not point at a storage")
    offset = int(storage_offset)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
        raise pickle.UnpicklingError("a tensor record has an invalid size or stride")
    numel = storage._untyped_storage.nbytes() // torch.empty(0, dtype=storage.dtype).element_size()
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= numel:
        raise pickle.UnpicklingError("a tensor record reaches past the end of its storage")
    return torch.empty(0, dtype=storage.dtype).set_(storage._untyped_storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter record does not hold a tensor")
    return data


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    table: dict[tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    return table


_COMMON_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    **_numpy_globals(),
}
_ALLOWED_GLOBALS: dict[str, dict[tuple[str, str], Any]] = {
    "nvidia-pkl": {
        **_COMMON_GLOBALS,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("torch.storage", "_load_from_bytes"): _load_from_bytes,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    },
    "tf-pkl": {**_COMMON_GLOBALS, ("dnnlib.tflib.network", "Network"): _TFNetwork},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of one checkpoint format and refuses the rest."""

    def __init__(self, file: Any, fmt: str, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self._allowed = _ALLOWED_GLOBALS[fmt]
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"Refused to load {self._path}: it asks for the Python global '{module}.{name}', which "
                "StyleGAN2 checkpoints never need and which could run code, so nothing was executed; "
                "only load files from sources you trust."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not part of this format")


def _unpickle(path: Path, fmt: str) -> Any:
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle, fmt, path).load()
    except CheckpointError:
        raise
    except _READ_ERRORS as err:
        raise CheckpointError(
            f"{path} could not be read as a {fmt} checkpoint ({type(err).__name__}: {err}); "
            "the file is truncated or corrupt, re-download it."
        ) from None


# ----------------------------------------------------------------------------- NVIDIA PyTorch pickles


def _flatten_module(
    obj: _PersistentObject, prefix: str, out: dict[str, Any], modules: dict[str, Any]
) -> None:
    state = obj.state
    modules[prefix.rstrip(".")] = state
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is not None:
                out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _PersistentObject):
            raise CheckpointError(
                f"The sub-network {prefix + name} is not a StyleGAN2 layer; the file is not supported."
            )
        _flatten_module(child, f"{prefix}{name}.", out, modules)


def _nvidia_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    data = _unpickle(path, "nvidia-pkl")
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), _PersistentObject):
        raise CheckpointError(
            f"{path} is an NVIDIA pickle without a 'G_ema' generator; give a generator snapshot."
        )
    G = data["G_ema"]
    if G.class_name not in _NVIDIA_GENERATOR_CLASSES:
        raise CheckpointError(
            f"{path} holds a {G.class_name}, not a StyleGAN2 generator (StyleGAN3 and other networks are "
            "not supported); give a StyleGAN2 checkpoint."
        )
    kwargs = dict(G.state.get("_init_kwargs") or G.state.get("init_kwargs") or {})
    c_dim = G.state.get("c_dim", kwargs.get("c_dim", 0)) or 0
    tensors: dict[str, Any] = {}
    modules: dict[str, Any] = {}
    _flatten_module(G, "", tensors, modules)
    if c_dim or any(k.startswith("mapping.embed.") for k in tensors):
        raise CheckpointError(
            f"{path} is a conditional (class-label) generator; only unconditional generators can be priors."
        )
    for key in [k for k in tensors if k.endswith(".resample_filter")]:
        _check_filter(tensors.pop(key), fir_filter(), path, key)
    state = {k: _as_float(v, path, k) for k, v in tensors.items()}

    mapping_kwargs = dict(kwargs.get("mapping_kwargs") or {})
    synthesis_kwargs = dict(kwargs.get("synthesis_kwargs") or {})
    if synthesis_kwargs.get("architecture", "skip") != "skip":
        raise CheckpointError(
            f"{path} uses the '{synthesis_kwargs['architecture']}' synthesis architecture; "
            "only 'skip' is supported."
        )
    lr_mul = _plain(
        (modules.get("mapping.fc0") or {}).get("bias_gain", mapping_kwargs.get("lr_multiplier", 0.01))
    )
    clamps = {
        _plain(layer["conv_clamp"])
        for name, layer in modules.items()
        if name.startswith("synthesis.b") and name.count(".") == 2 and "conv_clamp" in layer
    }
    if len(clamps) > 1:
        raise CheckpointError(
            f"{path} clamps its layers to different values {sorted(map(str, clamps))}; not supported."
        )
    conv_clamp = clamps.pop() if clamps else synthesis_kwargs.get("conv_clamp")
    return state, {"conv_clamp": conv_clamp, "mapping_lr_multiplier": float(lr_mul)}


# ----------------------------------------------------------------------------- TensorFlow pickles


def _tf_variables(net: _TFNetwork, path: Path, what: str) -> dict[str, np.ndarray]:
    variables = net.state.get("variables")
    if not isinstance(variables, (list, tuple)):
        raise CheckpointError(f"{path} has a {what} network without variables; the file is corrupt.")
    return {str(name): np.asarray(value) for name, value in variables}


def _tf_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    data = _unpickle(path, "tf-pkl")
    if not (isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, _TFNetwork) for n in data)):
        raise CheckpointError(
            f"{path} is a TensorFlow pickle but not the (G, D, Gs) tuple of StyleGAN2; not supported."
        )
    Gs = data[2]
    components = Gs.state.get("components") or {}
    if not isinstance(components.get("mapping"), _TFNetwork) or not isinstance(
        components.get("synthesis"), _TFNetwork
    ):
        raise CheckpointError(
            f"{path} has no mapping and synthesis networks in Gs; it is not a StyleGAN2 generator."
        )
    own = _tf_variables(Gs, path, "Gs")
    mapping = _tf_variables(components["mapping"], path, "mapping")
    synthesis = _tf_variables(components["synthesis"], path, "synthesis")
    kwargs = {
        **dict(Gs.state.get("static_kwargs") or {}),
        **dict(components["mapping"].state.get("static_kwargs") or {}),
        **dict(components["synthesis"].state.get("static_kwargs") or {}),
    }
    if kwargs.get("label_size") or any(k.startswith(("LabelConcat", "LabelEmbed")) for k in mapping):
        raise CheckpointError(
            f"{path} is a conditional (class-label) generator; only unconditional generators can be priors."
        )
    if kwargs.get("architecture", "skip") != "skip":
        raise CheckpointError(
            f"{path} uses the '{kwargs['architecture']}' synthesis architecture; only 'skip' is supported."
        )

    def take(table: dict[str, np.ndarray], name: str, scope: str) -> torch.Tensor:
        if name not in table:
            raise CheckpointError(
                f"{path} has no variable {scope}/{name}, so it is not a StyleGAN2 (config e/f) generator; "
                "not supported."
            )
        return torch.from_numpy(np.array(table[name], dtype=np.float32))

    state: dict[str, torch.Tensor] = {}
    num_dense = len([k for k in mapping if re.fullmatch(r"Dense\d+/weight", k)])
    for i in range(num_dense):
        state[f"mapping.fc{i}.weight"] = take(mapping, f"Dense{i}/weight", "G_mapping").t()
        state[f"mapping.fc{i}.bias"] = take(mapping, f"Dense{i}/bias", "G_mapping")
    if "dlatent_avg" in own:
        state["mapping.w_avg"] = take(own, "dlatent_avg", "Gs")
    resolutions = sorted({int(m.group(1)) for k in synthesis if (m := re.match(r"(\d+)x\1/", k))})
    state["synthesis.b4.const"] = take(synthesis, "4x4/Const/const", "G_synthesis")[0]
    for r in resolutions:
        layers = [("Conv", "conv1")] if r == 4 else [("Conv0_up", "conv0"), ("Conv1", "conv1")]
        for tf_name, ours in layers:
            scope = f"{r}x{r}/{tf_name}"
            weight = take(synthesis, f"{scope}/weight", "G_synthesis")
            if tf_name == "Conv0_up":
                weight = weight.flip([0, 1])
            k, _, fan_in, _ = weight.shape
            prefix = f"synthesis.b{r}.{ours}."
            state[prefix + "weight"] = weight.permute(3, 2, 0, 1) / math.sqrt(fan_in * k * k)
            state[prefix + "bias"] = take(synthesis, f"{scope}/bias", "G_synthesis")
            state[prefix + "noise_strength"] = take(
                synthesis, f"{scope}/noise_strength", "G_synthesis"
            ).reshape([])
            state[prefix + "affine.weight"] = take(synthesis, f"{scope}/mod_weight", "G_synthesis").t()
            state[prefix + "affine.bias"] = take(synthesis, f"{scope}/mod_bias", "G_synthesis") + 1.0
        scope = f"{r}x{r}/ToRGB"
        prefix = f"synthesis.b{r}.torgb."
        state[prefix + "weight"] = take(synthesis, f"{scope}/weight", "G_synthesis").permute(3, 2, 0, 1)
        state[prefix + "bias"] = take(synthesis, f"{scope}/bias", "G_synthesis")
        state[prefix + "affine.weight"] = take(synthesis, f"{scope}/mod_weight", "G_synthesis").t()
        state[prefix + "affine.bias"] = take(synthesis, f"{scope}/mod_bias", "G_synthesis") + 1.0
    for j, layer in enumerate(_noise_layers(resolutions)):
        state[f"synthesis.{layer}.noise_const"] = take(synthesis, f"noise{j}", "G_synthesis")[0, 0]
    config = {
        "conv_clamp": _plain(kwargs.get("conv_clamp")),
        "mapping_lr_multiplier": float(kwargs.get("mapping_lrmul", 0.01)),
    }
    return {k: v.contiguous() for k, v in state.items()}, config


def _noise_layers(resolutions: list[int]) -> list[str]:
    """Layer names in the order of the TF / rosinality noise inputs."""
    layers = []
    for r in resolutions:
        layers += ["b4.conv1"] if r == 4 else [f"b{r}.conv0", f"b{r}.conv1"]
    return layers


# ----------------------------------------------------------------------------- rosinality .pt


def _rosinality_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    # train.py checkpoints carry the command line as an argparse.Namespace: plain attributes.
    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds objects other than tensors ({str(err).splitlines()[0]}); it is refused because "
            "loading it could run code."
        ) from None
    except _READ_ERRORS as err:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(err).__name__}: {err}); "
            "the file is truncated or corrupt, re-download it."
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("g_ema"), dict):
        raise CheckpointError(
            f"{path} has no 'g_ema' state dictionary; it is not a rosinality StyleGAN2 checkpoint."
        )
    theirs = {k: _as_float(v, path, k) for k, v in ckpt["g_ema"].items()}
    n_mlp = len([k for k in theirs if re.fullmatch(r"style\.\d+\.weight", k)])
    log_size = 2 + len([k for k in theirs if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    resolutions = [2**i for i in range(2, log_size + 1)]
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in theirs:
            raise CheckpointError(
                f"{path} has no '{name}' in g_ema, so it is not a rosinality StyleGAN2 generator; "
                "not supported."
            )
        used.add(name)
        return theirs[name]

    state: dict[str, torch.Tensor] = {}
    for i in range(1, n_mlp + 1):
        state[f"mapping.fc{i - 1}.weight"] = take(f"style.{i}.weight")
        state[f"mapping.fc{i - 1}.bias"] = take(f"style.{i}.bias")
    if isinstance(ckpt.get("latent_avg"), torch.Tensor):
        state["mapping.w_avg"] = ckpt["latent_avg"].float().reshape(-1)
    state["synthesis.b4.const"] = take("input.input")[0]
    blur = fir_filter() * 4.0
    layers = [("conv1", "b4.conv1")] + [
        (f"convs.{2 * m + c}", f"b{r}.conv{c}") for m, r in enumerate(resolutions[1:]) for c in (0, 1)
    ]
    for theirs_name, ours in layers:
        weight = take(f"{theirs_name}.conv.weight")[0]
        _, fan_in, k, _ = weight.shape
        prefix = f"synthesis.{ours}."
        state[prefix + "weight"] = weight / math.sqrt(fan_in * k * k)
        state[prefix + "affine.weight"] = take(f"{theirs_name}.conv.modulation.weight")
        state[prefix + "affine.bias"] = take(f"{theirs_name}.conv.modulation.bias")
        state[prefix + "noise_strength"] = take(f"{theirs_name}.noise.weight").reshape([])
        state[prefix + "bias"] = take(f"{theirs_name}.activate.bias")
        if f"{theirs_name}.conv.blur.kernel" in theirs:
            _check_filter(
                take(f"{theirs_name}.conv.blur.kernel"), blur, path, f"{theirs_name}.conv.blur.kernel"
            )
    torgbs = [("to_rgb1", "b4")] + [(f"to_rgbs.{m}", f"b{r}") for m, r in enumerate(resolutions[1:])]
    for theirs_name, block in torgbs:
        prefix = f"synthesis.{block}.torgb."
        state[prefix + "weight"] = take(f"{theirs_name}.conv.weight")[0]
        state[prefix + "affine.weight"] = take(f"{theirs_name}.conv.modulation.weight")
        state[prefix + "affine.bias"] = take(f"{theirs_name}.conv.modulation.bias")
        state[prefix + "bias"] = take(f"{theirs_name}.bias").reshape(-1)
        if f"{theirs_name}.upsample.kernel" in theirs:
            _check_filter(
                take(f"{theirs_name}.upsample.kernel"), blur, path, f"{theirs_name}.upsample.kernel"
            )
    for j, layer in enumerate(_noise_layers(resolutions)):
        state[f"synthesis.{layer}.noise_const"] = take(f"noises.noise_{j}")[0, 0]
    unknown = sorted(set(theirs) - used)
    if unknown:
        raise CheckpointError(
            f"{path} has parameters that a rosinality StyleGAN2 generator does not have "
            f"({', '.join(unknown[:3])}); "
            "this variant is not supported."
        )
    return {k: v.contiguous() for k, v in state.items()}, {"conv_clamp": None, "mapping_lr_multiplier": 0.01}


# ----------------------------------------------------------------------------- building the generator


def _plain(value: Any) -> Any:
    """A numpy scalar as a Python number (configs are JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def _as_float(value: Any, path: Path, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.array(value))
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise CheckpointError(
            f"{path} stores '{name}' as something other than a float tensor; the file is corrupt."
        )
    return value.detach().float().contiguous()


def _check_filter(value: Any, expected: torch.Tensor, path: Path, name: str) -> None:
    value = torch.as_tensor(value).float()
    if value.shape != expected.shape or not torch.allclose(value, expected, atol=1e-6):
        raise CheckpointError(
            f"{path} resamples with a filter other than [1, 3, 3, 1] ('{name}'); "
            "this variant is not supported."
        )


def _infer_config(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Resolution, channels, latent sizes, mapping depth and channel_base/max from the tensor shapes."""
    fcs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    blocks = sorted(
        int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k))
    )
    if (
        not fcs
        or fcs != list(range(len(fcs)))
        or not blocks
        or blocks != [2**i for i in range(2, 2 + len(blocks))]
    ):
        raise CheckpointError(f"{path} does not hold a complete StyleGAN2 mapping and synthesis network.")
    w_dim = state[f"mapping.fc{fcs[-1]}.weight"].shape[0]
    z_dim = state["mapping.fc0.weight"].shape[1]
    for i in fcs:
        expected = (w_dim, z_dim if i == 0 else w_dim)
        if tuple(state[f"mapping.fc{i}.weight"].shape) != expected:
            raise CheckpointError(
                f"{path} has a mapping layer of shape {tuple(state[f'mapping.fc{i}.weight'].shape)} where "
                f"{expected} is expected; mapping networks with hidden widths other than w_dim are not "
                "supported."
            )
    channels = {r: state[f"synthesis.b{r}.conv1.weight"].shape[0] for r in blocks}
    resolution = blocks[-1]
    channel_max = max(channels.values())
    below = [r for r in blocks if channels[r] < channel_max]
    channel_base = channels[below[0]] * below[0] if below else channel_max * resolution
    if any(min(channel_base // r, channel_max) != c for r, c in channels.items()):
        raise CheckpointError(
            f"{path} has feature maps {channels} per resolution, not of the form min(channel_base / R, "
            "channel_max); not supported."
        )
    return {
        "resolution": resolution,
        "channels": state[f"synthesis.b{resolution}.torgb.weight"].shape[0],
        "z_dim": z_dim,
        "w_dim": w_dim,
        "mapping_layers": len(fcs),
        "channel_base": channel_base,
        "channel_max": channel_max,
    }


def _build(
    state: dict[str, torch.Tensor], settings: dict[str, Any], path: Path, source_format: str
) -> StyleGAN2Generator:
    config = {**_infer_config(state, path), **settings}
    try:
        G = StyleGAN2Generator(**config, compute_stats=False)
    except ValueError as err:
        raise CheckpointError(f"{path} holds a generator this package cannot build: {err}") from None
    expected = G.state_dict()
    has_w_avg = "mapping.w_avg" in state
    state = {**state, "w_avg": expected["w_avg"], "w_std": expected["w_std"]}
    state.setdefault("mapping.w_avg", expected["mapping.w_avg"])
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match a StyleGAN2 generator of its own shape (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); this variant is not supported."
        )
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"{path} stores '{key}' with shape {tuple(state[key].shape)} where {tuple(value.shape)} is "
                "expected; the file is corrupt or of an unsupported variant."
            )
    G.load_state_dict(state, strict=True)
    G.compute_w_stats()
    if not has_w_avg:
        G.mapping.w_avg.copy_(G.w_avg)
    G.source_format = source_format
    G.info = {"source": str(path), "source_format": source_format}
    return G.eval()


_READERS: dict[str, Callable[[Path], tuple[dict[str, torch.Tensor], dict[str, Any]]]] = {
    "nvidia-pkl": _nvidia_state,
    "tf-pkl": _tf_state,
    "rosinality-pt": _rosinality_state,
}


def load_foreign(path: str | os.PathLike) -> StyleGAN2Generator:
    """Load a StyleGAN2 generator from an NVIDIA pickle (PyTorch or TensorFlow) or a rosinality ``.pt``.

    The format is detected from the content (:func:`sniff_format`); a project ``.safetensors``
    file is handed to :func:`brgm_pyro.checkpoints.load_project_checkpoint`. The generator comes
    back in eval mode with ``w_avg``/``w_std`` computed (``mapping.w_avg`` is the file's running
    average when it has one) and ``source_format`` set. Raises :class:`CheckpointError` for
    truncated, foreign, unsafe or unsupported files.
    """
    path = Path(path)
    fmt = sniff_format(path)
    if fmt == "brgm-safetensors":
        from brgm_pyro.checkpoints import load_project_checkpoint

        G = load_project_checkpoint(path)
        G.source_format = fmt
        return G
    state, settings = _READERS[fmt](path)
    return _build(state, settings, path, fmt)


# ----------------------------------------------------------------------------- public priors

_NVIDIA_NC = (
    "NVIDIA Source Code License-NC: research and evaluation only, no commercial use "
    "(https://nvlabs.github.io/stylegan2/license.html)"
)
_NVIDIA_NC_ADA = (
    "NVIDIA Source Code License (non-commercial: research and evaluation only) "
    "(https://github.com/NVlabs/stylegan2-ada-pytorch/blob/main/LICENSE.txt)"
)
_BRGM_LICENCE = (
    "no licence stated by the BRGM authors; trained with NVIDIA's non-commercial StyleGAN2 code, "
    "so treat as non-commercial research use; the training data carry their own terms"
)
_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
_ADA = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"


def _prior(
    *,
    url: str,
    filename: str,
    resolution: int,
    channels: int | None,
    source_format: str,
    licence: str,
    data: str,
    sha256: str | None = None,
    size: int | None = None,
    perceptual: str = "lpips-vgg",
) -> dict[str, Any]:
    return {
        "url": url,
        "filename": filename,
        "resolution": resolution,
        "channels": channels,
        "source_format": source_format,
        "licence": licence,
        "data": data,
        "sha256": sha256,
        "md5": None,
        "size": size,
        "perceptual": perceptual,
    }


#: Published StyleGAN2 generators by name. Each entry: ``url``, ``filename`` (its name in the
#: cache), ``resolution``, ``channels`` (None: not published, read from the file), ``source_format``,
#: ``licence``, ``data``, ``sha256``/``md5``/``size`` where known (None otherwise), ``perceptual``
#: (the default perceptual network of the reconstruction).
PUBLIC_PRIORS: dict[str, dict[str, Any]] = {
    "ffhq-1024": _prior(
        url=_NGC + "stylegan2-ffhq-1024x1024.pkl",
        filename="stylegan2-ffhq-1024x1024.pkl",
        resolution=1024,
        channels=3,
        source_format="nvidia-pkl",
        licence=_NVIDIA_NC,
        data="FFHQ (CC BY-NC-SA 4.0), StyleGAN2 config-f, PyTorch pickle of the stylegan3 release",
    ),
    "ffhq-512": _prior(
        url=_NGC + "stylegan2-ffhq-512x512.pkl",
        filename="stylegan2-ffhq-512x512.pkl",
        resolution=512,
        channels=3,
        source_format="nvidia-pkl",
        licence=_NVIDIA_NC,
        data="FFHQ (CC BY-NC-SA 4.0) at 512 px, PyTorch pickle of the stylegan3 release",
    ),
    "ffhq-256": _prior(
        url=_NGC + "stylegan2-ffhq-256x256.pkl",
        filename="stylegan2-ffhq-256x256.pkl",
        resolution=256,
        channels=3,
        source_format="nvidia-pkl",
        licence=_NVIDIA_NC,
        data="FFHQ (CC BY-NC-SA 4.0) at 256 px, PyTorch pickle of the stylegan3 release",
    ),
    "ffhq-1024-ada": _prior(
        url=_ADA + "ffhq.pkl",
        filename="stylegan2-ada-ffhq-1024.pkl",
        resolution=1024,
        channels=3,
        source_format="nvidia-pkl",
        licence=_NVIDIA_NC_ADA,
        data="FFHQ (CC BY-NC-SA 4.0), stylegan2-ada-pytorch release",
    ),
    "ffhq-1024-tf": _prior(
        url="https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-ffhq-config-f.pkl",
        filename="stylegan2-ffhq-config-f.pkl",
        resolution=1024,
        channels=3,
        source_format="tf-pkl",
        licence=_NVIDIA_NC,
        data="FFHQ (CC BY-NC-SA 4.0), original TensorFlow StyleGAN2 config-f",
        sha256="adf127ea7bb8a7788c8bdeda3c9937f7310b669b09ecf799ca53a631ff46948d",
        size=381673535,
    ),
    "metfaces-1024": _prior(
        url=_ADA + "metfaces.pkl",
        filename="stylegan2-ada-metfaces-1024.pkl",
        resolution=1024,
        channels=3,
        source_format="nvidia-pkl",
        licence=_NVIDIA_NC_ADA,
        data="MetFaces (CC BY-NC 2.0 and public domain images), stylegan2-ada-pytorch release",
    ),
    "afhq-cat-512": _prior(
        url=_ADA + "afhqcat.pkl",
        filename="stylegan2-ada-afhqcat-512.pkl",
        resolution=512,
        channels=3,
        source_format="nvidia-pkl",
        licence=_NVIDIA_NC_ADA,
        data="AFHQ cat (CC BY-NC 4.0), stylegan2-ada-pytorch release",
    ),
    "afhq-dog-512": _prior(
        url=_ADA + "afhqdog.pkl",
        filename="stylegan2-ada-afhqdog-512.pkl",
        resolution=512,
        channels=3,
        source_format="nvidia-pkl",
        licence=_NVIDIA_NC_ADA,
        data="AFHQ dog (CC BY-NC 4.0), stylegan2-ada-pytorch release",
    ),
    "afhq-wild-512": _prior(
        url=_ADA + "afhqwild.pkl",
        filename="stylegan2-ada-afhqwild-512.pkl",
        resolution=512,
        channels=3,
        source_format="nvidia-pkl",
        licence=_NVIDIA_NC_ADA,
        data="AFHQ wild (CC BY-NC 4.0), stylegan2-ada-pytorch release",
    ),
    "brgm-ffhq-1024": _prior(
        url="https://dl.dropboxusercontent.com/s/jlgybz6nfhmpv54/ffhq.pkl",
        filename="brgm-ffhq-1024.pkl",
        resolution=1024,
        channels=3,
        source_format="tf-pkl",
        licence=_BRGM_LICENCE,
        data="BRGM authors' FFHQ generator, trained on 90% of FFHQ (10% held out for testing)",
    ),
    "brgm-xray-1024": _prior(
        url="https://dl.dropboxusercontent.com/s/gphxjioth6dn5kb/xray.pkl",
        filename="brgm-xray-1024.pkl",
        resolution=1024,
        channels=None,
        source_format="tf-pkl",
        licence=_BRGM_LICENCE,
        data="BRGM authors' chest X-ray generator (about 240,000 frontal MIMIC images, PhysioNet "
        "credentialed licence)",
    ),
    "brgm-brains-256": _prior(
        url="https://dl.dropboxusercontent.com/s/p9vgdcn5q3wpcuo/brains.pkl",
        filename="brgm-brains-256.pkl",
        resolution=256,
        channels=None,
        source_format="tf-pkl",
        licence=_BRGM_LICENCE,
        data="BRGM authors' brain MRI generator (7,329 middle coronal slices of ADNI, OASIS, PPMI, AIBL, "
        "ABIDE; their data use agreements apply)",
    ),
}


def public_prior_path(name: str) -> Path:
    """Where :func:`load_public_prior` keeps (or expects) the file of ``name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _entry(name)["filename"]


def _entry(name: str) -> dict[str, Any]:
    if name not in PUBLIC_PRIORS:
        raise InputError(f"Unknown public prior {name!r}; choose one of: {', '.join(sorted(PUBLIC_PRIORS))}.")
    return PUBLIC_PRIORS[name]


def _digest_file(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum_failure(path: Path, entry: dict[str, Any]) -> str | None:
    """The name of the first known checksum that ``path`` fails, or None."""
    for algorithm in ("sha256", "md5"):
        expected = entry.get(algorithm)
        if expected and _digest_file(path, algorithm) != expected.lower():
            return algorithm
    return None


def _download(name: str, entry: dict[str, Any], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(entry["url"], headers={"User-Agent": "brgm-pyro"})
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or entry.get("size")
                done = 0
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name) as bar:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
                        done += len(chunk)
                        bar.update(len(chunk))
            if total and done != total:
                raise CheckpointError(
                    f"The download of the prior {name!r} from {entry['url']} stopped after {done} of {total} "
                    "bytes; run again to retry."
                )
            failed = _checksum_failure(tmp, entry)
            if failed:
                raise CheckpointError(
                    f"The download of the prior {name!r} from {entry['url']} fails its {failed} check "
                    f"(expected {entry[failed]}), so it was not kept; run again, and if it fails again the "
                    "published file has changed."
                )
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise CheckpointError(
            f"Cannot download the prior {name!r} from {entry['url']} ({reason}); download it on a machine "
            f"with internet access and place it at {dest}, then run again."
        ) from None


def load_public_prior(name: str) -> StyleGAN2Generator:
    """Load a published generator of :data:`PUBLIC_PRIORS` by name, downloading it on first use.

    The file is cached under ``torch.hub.get_dir()/checkpoints/`` (see :func:`public_prior_path`);
    the download shows a progress bar, is written atomically and is checked against its checksum
    where one is known. Offline, the error gives the URL and the exact path to place the file at.
    The generator carries ``name`` and ``card`` (its registry entry, with the licence and the
    default perceptual network).
    """
    entry = _entry(name)
    path = public_prior_path(name)
    if path.is_file():
        failed = _checksum_failure(path, entry)
        if failed:
            raise CheckpointError(
                f"The cached file of the prior {name!r} at {path} fails its {failed} check (expected "
                f"{entry[failed]}); delete it so that it is downloaded again from {entry['url']}."
            )
    else:
        _download(name, entry, path)
    G = load_foreign(path)
    G.name = name
    G.card = dict(entry)
    G.info = {**getattr(G, "info", {}), "prior": name, "url": entry["url"], "licence": entry["licence"]}
    return G
