"""brgm-pyro: Bayesian image reconstruction with a pretrained StyleGAN2 prior (BRGM) in Pyro.

    import brgm_pyro as bp
    G = bp.load_generator("fashion-mnist-32")
    f = bp.forward.Downsample(factor=4, kernel="bicubic")
    rec = bp.reconstruct(f(x).clamp(0, 1), f, G)

The public names are imported on first use (PEP 562), so that ``import brgm_pyro`` and the ``brgm``
command's ``--help`` do not pay for importing torch and Pyro.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as type checkers and editors see them
    from brgm_pyro import forward as forward
    from brgm_pyro.checkpoints import load_generator as load_generator
    from brgm_pyro.checkpoints import save_generator as save_generator
    from brgm_pyro.inference.map import MAPSchedule as MAPSchedule
    from brgm_pyro.models.brgm import BRGMParams as BRGMParams
    from brgm_pyro.posterior import Posterior as Posterior
    from brgm_pyro.reconstruct import ReconstructionResult as ReconstructionResult
    from brgm_pyro.reconstruct import reconstruct as reconstruct
    from brgm_pyro.sampling import sample_posterior as sample_posterior
    from brgm_pyro.search import SearchSettings as SearchSettings
    from brgm_pyro.stylegan2 import StyleGAN2Generator as StyleGAN2Generator

# Public name -> the module that defines it ("" for a submodule of the same name).
_PUBLIC = {
    "BRGMParams": "brgm_pyro.models.brgm",
    "MAPSchedule": "brgm_pyro.inference.map",
    "Posterior": "brgm_pyro.posterior",
    "ReconstructionResult": "brgm_pyro.reconstruct",
    "SearchSettings": "brgm_pyro.search",
    "StyleGAN2Generator": "brgm_pyro.stylegan2",
    "forward": "",
    "load_generator": "brgm_pyro.checkpoints",
    "reconstruct": "brgm_pyro.reconstruct",
    "sample_posterior": "brgm_pyro.sampling",
    "save_generator": "brgm_pyro.checkpoints",
}

__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'brgm_pyro' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name] or f"brgm_pyro.{name}")
    value = module if not _PUBLIC[name] else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


class _Package(types.ModuleType):
    """The package's module: importing the submodule ``brgm_pyro.reconstruct`` sets the package's attribute
    ``reconstruct`` to that module, over the function of the same name; the attribute stays the function,
    as when the package imported it eagerly (``from brgm_pyro.reconstruct import ...`` is unaffected)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _PUBLIC.get(name) == f"brgm_pyro.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
