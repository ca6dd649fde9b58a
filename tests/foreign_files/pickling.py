"""Pickles with the globals of their real writers: stand-ins written under the real names, and a reader of the globals a file names.

``pickle._Pickler`` (the pure-Python pickler) writes each stand-in of this module under the
global name its real writer's object has (``torch_utils.persistence._reconstruct_persistent_obj``,
``dnnlib.util.EasyDict``, ``dnnlib.tflib.network.Network``, numpy 1.x's ``numpy.core.multiarray``),
with the same opcodes the real object would produce; everything else (tensors, arrays, dicts) is
pickled by the real torch and numpy.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any


def never_called(*args: Any) -> None:
    """Written as ``torch_utils.persistence._reconstruct_persistent_obj``; a loader must never call it."""
    raise AssertionError("the stand-in of a foreign global must never be called")


class EasyDict(dict):
    """Written as ``dnnlib.util.EasyDict``."""


class Network:
    """Written as ``dnnlib.tflib.network.Network``: pickled through its ``__getstate__``, as the real one."""

    def __init__(self, state: dict) -> None:
        self._state = state

    def __getstate__(self) -> dict:
        return self._state


def _numpy_1_names() -> dict[int, tuple[str, str]]:
    from numpy._core import multiarray

    return {
        id(multiarray._reconstruct): ("numpy.core.multiarray", "_reconstruct"),
        id(multiarray.scalar): ("numpy.core.multiarray", "scalar"),
    }


class FaithfulPickler(pickle._Pickler):
    """A pickler that writes the stand-ins of this module under the global names their real writers use."""

    names = {
        id(never_called): ("torch_utils.persistence", "_reconstruct_persistent_obj"),
        id(EasyDict): ("dnnlib.util", "EasyDict"),
        id(Network): ("dnnlib.tflib.network", "Network"),
        **_numpy_1_names(),
    }
    # The pure-Python pickler dispatches functions to its own save_global: route them to ours.
    dispatch = {**pickle._Pickler.dispatch, types.FunctionType: lambda self, obj: self.save_global(obj)}

    def save_global(self, obj: Any, name: str | None = None) -> None:
        target = self.names.get(id(obj))
        if target is None:
            return super().save_global(obj, name)
        module, qualname = target
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)


def dump(obj: Any, path: Path, protocol: int = 4) -> Path:
    """Pickle ``obj`` to ``path`` as the real writers would (protocol 4: Python 3.6-3.8's highest, 3.8's default)."""
    with open(path, "wb") as handle:
        FaithfulPickler(handle, protocol).dump(obj)
    return path


def pickle_globals(path: Path) -> list[str]:
    """The globals a pickle names, in order of first appearance (read without resolving any)."""
    found: list[str] = []

    class Anything:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __setstate__(self, state: Any) -> None:
            pass

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if f"{module}.{name}" not in found:
                found.append(f"{module}.{name}")
            return type(name, (dict,), {}) if name == "EasyDict" else Anything

    with open(path, "rb") as handle:
        Recorder(handle).load()
    return found
