"""BRGM itself in the baselines' calling convention: "brgm" (the MAP) and "brgm-mean" (the posterior mean).

    brgm       bp.reconstruct(y, f, G) with the prior's defaults (its card): the mode of highest posterior
               density the search finds, its estimate G(w*) + E[r | y, w*]
    brgm-mean  bp.sample_posterior(y, f, G).mean with the defaults of ``sample_posterior``: the mixture
               over the modes the search finds (a Laplace approximation at each, weighted by its
               evidence), the reach term of the card, 16 draws

Options are passed on to ``bp.reconstruct`` / ``bp.sample_posterior`` (``steps``, ``params``,
``model``, ``guide``, ...), so a setting measured for the defaults is one keyword away.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.forward import Operator
from brgm_pyro.reconstruct import reconstruct
from brgm_pyro.sampling import sample_posterior

__all__ = ["brgm_map", "brgm_mean"]


def _check_generator(G: nn.Module | None, name: str) -> None:
    if G is None:
        raise InputError(f"{name} reconstructs with a generative prior; pass G, e.g. bp.load_generator(...).")


def brgm_map(
    y: torch.Tensor, f: Operator, G: nn.Module | None = None, progress: bool = False, details: dict | None = None,
    keep_observed: bool = False, **options: Any,
) -> torch.Tensor:
    """The MAP reconstruction of ``bp.reconstruct``, images (B, C, H, W) in [0, 1] on y's device;
    ``details`` (a dict) gets the final -log p terms per image. ``keep_observed`` (inpainting: f keeps the
    image size) returns y on the observed pixels and G(w*) only in the holes, as inpainting networks do."""
    _check_generator(G, "brgm")
    rec = reconstruct(y, f, G, progress=progress, **options)
    if details is not None:
        details.update({f"neg_log_{name}": value[-1] for name, value in rec.losses.items()})
        details.update({name: value for name, value in rec.latents.items()})
    image = rec.image.to(y.device)
    if not keep_observed:
        return image
    if tuple(y.shape) != tuple(image.shape):
        raise InputError(
            f"keep_observed needs an f that keeps the image size (a Mask), but y is {tuple(y.shape)} and the images "
            f"are {tuple(image.shape)}; leave keep_observed off for super-resolution."
        )
    observed = f.observed(image.shape, device=y.device, dtype=y.dtype)
    return observed * y + (1 - observed) * image


def brgm_mean(
    y: torch.Tensor, f: Operator, G: nn.Module | None = None, method: str = "laplace", num_samples: int = 16,
    progress: bool = False, details: dict | None = None, **options: Any,
) -> torch.Tensor:
    """The posterior mean of ``bp.sample_posterior``, images (B, C, H, W) in [0, 1] on y's device;
    ``details`` (a dict) gets the method and guide used and the mean posterior std per image."""
    _check_generator(G, "brgm-mean")
    post = sample_posterior(y, f, G, method, num_samples, progress=progress, **options)
    if details is not None:
        inference = post.settings["inference"]
        details.update(method=method, model=post.settings["model"], guide=inference.get("guide", method),
                       mean_std=post.std.flatten(1).mean(1), modes=(post.modes.weights > 0).sum(0).float())
        details.update({name: value.mean(0) for name, value in post.latents.items() if name != "w"})
    return post.mean.to(y.device)
