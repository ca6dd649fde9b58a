"""Pyro models of BRGM (imported as ``brgm_pyro.models``); edit or copy them to swap a prior or a noise model.

``brgm`` is the paper's model; ``learned_noise``, ``reach``, ``heavy_tail``, ``no_colinear`` and
``unknown_blur`` are variants with the same signature, selectable by name through ``variants.get_model``;
``observation`` holds the pixel and perceptual likelihoods they share; ``protocol`` says what a model
must be for the drivers (``BRGMModel``), ``variants`` names them and makes the "auto" choice.
"""

from brgm_pyro.models import (
    brgm,
    heavy_tail,
    learned_noise,
    mapping,
    no_colinear,
    observation,
    protocol,
    reach,
    unknown_blur,
    variants,
)

__all__ = ["brgm", "heavy_tail", "learned_noise", "mapping", "no_colinear", "observation", "protocol", "reach", "unknown_blur", "variants"]
