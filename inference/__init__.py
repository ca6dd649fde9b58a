"""Inference drivers for the BRGM models (imported as ``brgm_pyro.inference``)."""

from brgm_pyro.inference.map import MAPSchedule, run_map

__all__ = ["MAPSchedule", "run_map"]
