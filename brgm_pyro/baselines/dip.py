"""The "dip" baseline: the deep image prior, deepinv's ``DeepImagePrior`` with its ``ConvDecoder``, one image at a time.

A randomly initialised convolutional decoder g_theta maps a fixed random input z (channels x 4 x 4) to
an image; theta is fitted to the data alone,

    theta_hat = argmin_theta ||f(g_theta(z)) - y||^2    (Adam, ``iterations`` steps at ``lr``),

and x_hat = g_theta_hat(z). The network's structure is the prior: it fits natural structure before
noise and detail, so the number of steps is the regulariser (Ulyanov et al. 2018). No training data;
each image is its own optimisation, from a fresh network seeded ``seed`` (the same for every image).
The default sizes and steps were chosen on Fashion-MNIST validation images (docs/results/diffusion.md).
"""

from __future__ import annotations

import torch
from torch import nn

from brgm_pyro.baselines.common import check_observation, clean_shape
from brgm_pyro.baselines.deepinv_physics import as_physics, require_deepinv
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Operator

__all__ = ["dip"]

INPUT_SIZE = (4, 4)


class _OneImage(nn.Module):
    """The corruption of image ``index`` alone: x (1, C, H, W) -> f(x repeated over the batch)[index].

    f may hold one mask per image of its batch; running it on copies of x and keeping row ``index``
    applies exactly that image's corruption (and its autograd adjoint is that row's adjoint)."""

    def __init__(self, f: Operator, index: int, batch: int):
        super().__init__()
        self.f, self.index, self.batch = f, index, batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x.expand(self.batch, *x.shape[1:]))[self.index : self.index + 1]


def dip(y: torch.Tensor, f: Operator, G: nn.Module | None = None, iterations: int = 500, lr: float = 0.01,
        channels: int = 64, layers: int = 5, seed: int = 0) -> torch.Tensor:
    """The deep-image-prior reconstruction of each image of y: images (B, C, H, W) in [0, 1] (module notes).

    Args:
        y, f, G: as for ``bp.reconstruct``; G only fixes the image size.
        iterations: Adam steps per image (the early stop that regularises).
        lr: Adam's learning rate.
        channels, layers: the ConvDecoder's feature maps and layers.
        seed: the seed of the network's initial weights and of its input z.
    """
    check_observation(y, f)
    for name, value in (("iterations", iterations), ("channels", channels), ("layers", layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive whole number, got {value!r}.")
    if layers < 2:
        raise InputError(f"The ConvDecoder needs at least 2 layers, got {layers}.")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise InputError(f"lr must be a positive number, got {lr!r}.")
    shape = clean_shape(y, f, G)
    deepinv = require_deepinv()
    images = []
    for index in range(shape[0]):
        physics = as_physics(_OneImage(f, index, shape[0]), (1, *shape[1:]))
        # DeepImagePrior draws z from torch's global generator: seed it, and leave the caller's as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            decoder = deepinv.models.ConvDecoder(tuple(shape[1:]), in_size=INPUT_SIZE, layers=layers,
                                                 channels=channels).to(y.device)
            solver = deepinv.models.DeepImagePrior(decoder, (channels, *INPUT_SIZE), iterations=iterations,
                                                   learning_rate=lr)
            images.append(solver(y[index : index + 1], physics).detach())
    return torch.cat(images).clamp(0, 1)
