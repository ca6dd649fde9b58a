"""The prior's reach: a model-discrepancy term r for the part of a clean image that no G(w) produces.

A generator trained on finitely many images does not reach every clean image exactly: the best
G(w) for a real image x leaves a residual x - G(w) that no w removes (``benchmarks/prior_quality.py``
measures it by MAP inversion with f = identity). Following Kennedy and O'Hagan's model discrepancy,
the clean image is G(w) plus that residual, a Gaussian:

    r       ~ Normal(0, sigma_reach^2 I)                 per pixel of the clean image
    x       = G(w) + r
    y       = f(x) + n,   n ~ Normal(0, sigma_pixel^2)   on observed pixels

``sigma_reach`` is a property of the prior: the RMS residual of identity inversion on held-out
images, written in the prior's card by ``scripts/ship_prior.py``. Because f is linear (an
:class:`~brgm_pyro.forward.Operator`, which carries its adjoint and F F^T), everything about r
given y and w is Gaussian and exact. With e = y - f(G(w)), a = sigma_reach^2, b = sigma_pixel^2 and
the solves of ``f.gram`` (``brgm_pyro.forward.gram``):

    p(y | w)      = Normal(e; 0, a F F^T + b I)                      ``reach_log_likelihood`` (the "reach" model)
    E[r | y, w]   = a F^T (a F F^T + b I)^-1 e                        ``reach_mean``
    r | y, w      = r0 + a F^T (a F F^T + b I)^-1 (e - F r0 - n0)     ``sample_reach_residual`` (Matheron's rule,
                    with (r0, n0) a draw of the prior)

E[x | y, w] = G(w) + E[r | y, w] is the estimate of the clean image given w: on an observed pixel of
a mask it moves G(w) towards y by a / (a + b); for super-resolution it restores consistency with y
up to the noise; in a hole it leaves G(w) as it is. ``predictive_images`` turns draws of w into
draws of the clean image.
"""

from __future__ import annotations

import torch
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.forward import Operator

__all__ = [
    "check_linear", "has_structure", "predictive_images", "reach_log_likelihood", "reach_mean",
    "sample_reach_residual",
]


def has_structure(f: nn.Module) -> bool:
    """Whether f carries the structure the reach needs: a linear :class:`~brgm_pyro.forward.Operator`
    (its adjoint and F F^T)."""
    return isinstance(f, Operator) and bool(f.linear)


def check_linear(f: nn.Module, shape: tuple[int, ...], device: torch.device | str = "cpu", seed: int = 0) -> None:
    """Raise InputError unless f is an operator with structure and f(a x1 + b x2) = a f(x1) + b f(x2) on
    random images of ``shape`` (a user's subclass of Operator may claim linearity it does not have)."""
    name = type(f).__name__
    if not has_structure(f):
        raise InputError(
            f"The prior-reach term needs a linear corruption f with its structure (a brgm_pyro.forward.Operator), "
            f"and {name} is not one; subclass Operator, or pass sigma_reach=None."
        )
    gen = torch.Generator().manual_seed(seed)
    x1, x2 = (torch.rand(shape, generator=gen).to(device) for _ in range(2))
    with torch.no_grad():
        lhs = f(0.3 * x1 - 0.7 * x2)
        rhs = 0.3 * f(x1) - 0.7 * f(x2)
    scale = rhs.abs().max().clamp_min(1e-6)
    if not torch.allclose(lhs, rhs, atol=1e-4 * float(scale), rtol=1e-4):
        raise InputError(
            f"The prior-reach term needs a linear corruption f, and {name} is not linear "
            "(f(a x1 + b x2) != a f(x1) + b f(x2)); use the operators of brgm_pyro.forward or pass sigma_reach=None."
        )


def _variances(sigma_reach: float, sigma_pixel: float | torch.Tensor, like: torch.Tensor) -> tuple[float, torch.Tensor]:
    if not sigma_reach > 0:
        raise InputError(f"sigma_reach must be positive, got {sigma_reach!r}.")
    sigma_pixel = torch.as_tensor(sigma_pixel, dtype=like.dtype, device=like.device)
    return float(sigma_reach) ** 2, sigma_pixel.reshape(-1).square() if sigma_pixel.dim() else sigma_pixel.square()


def reach_log_likelihood(
    residual: torch.Tensor, forward: Operator, sigma_pixel: float | torch.Tensor, sigma_reach: float
) -> torch.Tensor:
    """log Normal(e; 0, sigma_reach^2 F F^T + sigma_pixel^2 I) over the observed outputs, per image: the
    likelihood of y given w with r integrated out. ``residual`` e = y - f(G(w)), (B, C, h, w);
    ``sigma_pixel`` a number or (B,). Returns (B,)."""
    a, b = _variances(sigma_reach, sigma_pixel, residual)
    gram = forward.gram(forward.input_shape(residual.shape), device=residual.device, dtype=residual.dtype)
    return gram.log_density(residual, a, b)


def reach_mean(
    residual: torch.Tensor, forward: Operator, sigma_reach: float, sigma_pixel: float | torch.Tensor
) -> torch.Tensor:
    """E[r | y, w] = a F^T (a F F^T + b I)^-1 e for e = ``residual`` (B, C, h, w): (B, C, H, W)."""
    a, b = _variances(sigma_reach, sigma_pixel, residual)
    gram = forward.gram(forward.input_shape(residual.shape), device=residual.device, dtype=residual.dtype)
    with torch.no_grad():
        return a * forward.adjoint(gram.solve(residual, a, b))


def sample_reach_residual(
    residual: torch.Tensor,
    forward: Operator,
    sigma_reach: float,
    sigma_pixel: float | torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draws of r ~ p(r | y, w), one per row of ``residual`` e = y - f(G(w_s)), (N, c, h, w) (draws and
    images flattened together, ``forward`` tiled to match). ``sigma_pixel`` is a number or (N,).
    Returns r, (N, C, H, W)."""
    a, b = _variances(sigma_reach, sigma_pixel, residual)
    device, dtype = residual.device, residual.dtype
    image_shape = forward.input_shape(residual.shape)
    r0 = a**0.5 * torch.randn(image_shape, generator=generator, dtype=dtype).to(device)
    noise = b.sqrt().reshape(-1, 1, 1, 1) if b.dim() else b.sqrt()
    n0 = noise * torch.randn(residual.shape, generator=generator, dtype=dtype).to(device)
    gram = forward.gram(image_shape, device=device, dtype=dtype)
    with torch.no_grad():
        return r0 + a * forward.adjoint(gram.solve(residual - forward(r0) - n0, a, b))


def predictive_images(
    images: torch.Tensor,
    y: torch.Tensor,
    forward: Operator,
    sigma_reach: float,
    sigma_pixel: float | torch.Tensor,
    chunk_size: int,
    seed: int,
    mean: bool = False,
) -> torch.Tensor:
    """Draws of the clean image from draws of G(w): G(w_s) + r_s with r_s ~ p(r | y, w_s) (``mean=True``:
    + E[r | y, w_s]), clamped to [0, 1]. ``images`` (S, B, C, H, W) on any device, y (B, c, h, w) on
    f's device, ``sigma_pixel`` a number or (S, B). Returns (S, B, C, H, W) on the CPU."""
    num, batch = images.shape[:2]
    device = y.device
    noise = torch.as_tensor(sigma_pixel, dtype=y.dtype)
    gen = torch.Generator().manual_seed(10_007 + seed)
    out = []
    for start in range(0, num, chunk_size):
        chunk = images[start : start + chunk_size].to(device)
        draws = chunk.shape[0]
        f = forward.tile(draws)
        flat = chunk.reshape(-1, *chunk.shape[2:])
        with torch.no_grad():
            residual = y.repeat(draws, 1, 1, 1) - f(flat)
        sigma = noise[start : start + draws].reshape(-1).to(device) if noise.dim() else noise.to(device)
        if mean:
            r = reach_mean(residual, f, sigma_reach, sigma)
        else:
            r = sample_reach_residual(residual, f, sigma_reach, sigma, generator=gen)
        out.append((flat + r).clamp(0.0, 1.0).reshape(chunk.shape).cpu())
    return torch.cat(out)
