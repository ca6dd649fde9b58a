"""brgm-pyro: Bayesian image reconstruction with a pretrained StyleGAN2 prior (BRGM) in Pyro.

    import brgm_pyro as bp
    G = bp.load_generator("fashion-mnist-32")
    f = bp.forward.Downsample(factor=4, kernel="bicubic")
    rec = bp.reconstruct(f(x).clamp(0, 1), f, G)
"""

from brgm_pyro import (
    fmnist,  # noqa: F401  (registers the "fmnist" perceptual network)
    forward,
)
from brgm_pyro.checkpoints import load_generator, save_generator
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.posterior import Posterior
from brgm_pyro.reconstruct import ReconstructionResult, reconstruct
from brgm_pyro.sampling import sample_posterior
from brgm_pyro.search import SearchSettings
from brgm_pyro.stylegan2 import StyleGAN2Generator

__all__ = [
    "BRGMParams",
    "MAPSchedule",
    "Posterior",
    "ReconstructionResult",
    "SearchSettings",
    "StyleGAN2Generator",
    "forward",
    "load_generator",
    "reconstruct",
    "sample_posterior",
    "save_generator",
]
__version__ = "0.1.0"
