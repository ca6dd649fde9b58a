"""The restricted unpickler: reads NVIDIA's pickles while resolving only the few globals they need, so nothing in them runs.

A pickle is a program: each global it names is looked up and may be called. This unpickler
resolves a short allow-list per format (tensor and array rebuilders, ``OrderedDict``, ``EasyDict``
and the stand-ins below) and refuses every other global by name, before anything is called.

NVIDIA's PyTorch pickles (``torch_utils/persistence.py``) rebuild each network by calling
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, which executes ``meta["module_src"]``
(the source text of the network's module). Here that call makes a :class:`PersistentObject`
that keeps the record as data: the source stays a string that is read, never executed.
TensorFlow pickles (``dnnlib/tflib/network.py``) hold ``dnnlib.tflib.network.Network`` objects whose
state is a plain dictionary; :class:`TFNetwork` keeps it.
Tensor storages arrive as bytes in ``torch.save``'s format and are read with
``torch.load(weights_only=True)``, PyTorch's own restricted loader.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brgm_pyro.errors import CheckpointError

__all__ = ["READ_ERRORS", "PersistentObject", "TFNetwork", "unpickle"]

#: What a damaged file can raise while it is unpickled or read by torch.load (which checks some of its
#: records with ``assert``, e.g. a storage key that names no storage).
READ_ERRORS = (
    AssertionError,
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


class _Refused(pickle.UnpicklingError):
    """A record that asks for something that could run code (the message says what)."""


class PersistentObject:
    """One network of an NVIDIA pickle, as data: the record ``{type, version, module_src, class_name, state}``.

    ``class_name`` is the bare class name NVIDIA records (``"Generator"`` for StyleGAN2 and StyleGAN3
    alike); ``module_src`` is the recorded source text of the class's module, kept as text;
    ``state`` is the module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, attributes,
    ``_init_args``, ``_init_kwargs``).
    """

    __slots__ = ("class_name", "module_src", "state", "version")

    def __init__(self, class_name: str, module_src: str, state: dict[str, Any], version: Any) -> None:
        self.class_name, self.module_src, self.state, self.version = class_name, module_src, state, version

    @property
    def modules(self) -> dict[str, Any]:
        """The sub-networks by attribute name (``_modules``)."""
        return dict(self.state.get("_modules") or {})

    def init_kwargs(self) -> dict[str, Any]:
        """The keyword arguments the network was built with (``_init_kwargs``)."""
        return dict(self.state.get("_init_kwargs") or {})


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("a persistent-object record is not of type 'class'")
    state, source, name = meta.get("state"), meta.get("module_src"), meta.get("class_name")
    if not isinstance(state, dict) or not isinstance(source, str) or not isinstance(name, str):
        raise pickle.UnpicklingError(
            "a persistent-object record lacks its state, module source or class name"
        )
    return PersistentObject(name, source, state, meta.get("version"))


class TFNetwork:
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
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _Refused(
            "a tensor storage inside it is itself a pickle that asks for more than tensors"
        ) from None
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
    # numpy 1.x writes numpy.core.multiarray, numpy 2.x numpy._core.multiarray: the same two functions.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26
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
    "tf-pkl": {**_COMMON_GLOBALS, ("dnnlib.tflib.network", "Network"): TFNetwork},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of one checkpoint format and refuses the rest."""

    def __init__(self, file: Any, fmt: str) -> None:
        super().__init__(file, encoding="latin1")
        self._allowed = _ALLOWED_GLOBALS[fmt]

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"it asks for the Python global '{module}.{name}'") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not part of this format")


def unpickle(path: Path, fmt: str) -> Any:
    """The content of the pickle at ``path`` in format ``fmt`` ("nvidia-pkl" or "tf-pkl"), nothing run."""
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle, fmt).load()
    except _Refused as err:
        raise CheckpointError(
            f"Refused to load {path}: {err}, which StyleGAN2 checkpoints never need and which could run "
            "code, so nothing was executed; only load files from sources you trust."
        ) from None
    except READ_ERRORS as err:
        raise CheckpointError(
            f"{path} could not be read as a {fmt} checkpoint ({type(err).__name__}: {err}); "
            "the file is truncated or corrupt, re-download it."
        ) from None
