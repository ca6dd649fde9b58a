"""Inference drivers for the BRGM models (imported as ``brgm_pyro.inference``): MAP, SVI and MCMC, and the
Laplace whitening that SVI and MCMC share."""

from brgm_pyro.inference.map import MAPSchedule, run_map
from brgm_pyro.inference.mcmc import MCMCSettings, run_mcmc
from brgm_pyro.inference.svi import SVISettings, run_svi

__all__ = ["MAPSchedule", "MCMCSettings", "SVISettings", "run_map", "run_mcmc", "run_svi"]
