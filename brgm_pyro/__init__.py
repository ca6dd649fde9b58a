"""brgm-pyro: Bayesian image reconstruction with a pretrained StyleGAN2 prior (BRGM) in Pyro."""

from brgm_pyro import forward
from brgm_pyro.stylegan2 import StyleGAN2Generator

__all__ = ["StyleGAN2Generator", "forward"]
__version__ = "0.1.0"
