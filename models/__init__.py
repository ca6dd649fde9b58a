"""Pyro models of BRGM (imported as ``brgm_pyro.models``); edit or copy them to swap a prior or a noise model."""

from brgm_pyro.models import brgm

__all__ = ["brgm"]
