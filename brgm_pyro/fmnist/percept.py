"""The Fashion-MNIST perceptual network phi, ``"fmnist"`` in the perceptual registry (``brgm_pyro.perceptual``).

``phi(y) ~ Normal(phi(f(x)), sigma_percept^2 I)`` with phi the LPIPS-style normalised activations of
the four conv layers of :class:`~brgm_pyro.fmnist.networks.PerceptNet` (see
:mod:`brgm_pyro.fmnist.networks` for the architecture, the resizing of any input size and the maths).
"""

from __future__ import annotations

from pathlib import Path

import torch

from brgm_pyro.fmnist.networks import load_feature_net, lpips_features
from brgm_pyro.perceptual import FeatureNetwork

__all__ = ["FMNISTPercept"]


class FMNISTPercept(FeatureNetwork):
    """The Fashion-MNIST perceptual network phi (registered as ``"fmnist"``).

    ``forward(images)`` maps (B, 1, H, W) images in [0, 1], any size, to (B, 30720) features, the
    LPIPS-style normalised activations of PerceptNet's four conv layers (16 x 32^2 + 32 x 16^2 +
    64 x 8^2 + 128 x 4^2 values), so ``||phi(a) - phi(b)||^2`` is in [0, 4].

    Example:
        >>> phi = FMNISTPercept()
        >>> phi(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 30720])
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.net = load_feature_net("percept", weights)
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        activations, _ = self.net.taps(images)
        return lpips_features(activations)

