"""What a result depends on besides its inputs and settings: the versions of brgm-pyro and its libraries."""

from __future__ import annotations

import platform

import numpy as np
import pyro
import torch

import brgm_pyro

__all__ = ["versions"]


def versions() -> dict[str, str]:
    """The versions a result depends on, recorded with every output (brgm.json, a data-set run's attempts)."""
    return {
        "brgm_pyro": brgm_pyro.__version__,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
