"""The prior's reach: a model-discrepancy term for the posterior predictive of the clean image.

A generator trained on finitely many images does not reach every clean image exactly: the best
G(w) for a real image x leaves a residual x - G(w) that no w removes (``benchmarks/prior_quality.py``
measures it by MAP inversion with f = identity). The paper's model has no term for it, so the
posterior of G(w) alone is sure of pixels that the prior cannot produce, and its credible intervals
miss the truth more often than they claim. Following Kennedy and O'Hagan's model discrepancy, the
posterior predictive of the clean image adds that residual as a Gaussian:

    w       ~ p(w | y)                                   the model's posterior (SVI or MCMC draws)
    r       ~ Normal(0, sigma_reach^2 I)                 per pixel of the clean image
    x       = G(w) + r
    y       = f(x) + n,   n ~ Normal(0, sigma_pixel^2)   on observed pixels

``sigma_reach`` is a property of the prior: the RMS residual of identity inversion on held-out
images, written in the prior's card by ``scripts/ship_prior.py``. For each draw w_s, r is drawn from
p(r | y, w_s), which is Gaussian because f is linear: Matheron's rule turns a prior draw (r0, n0)
into a posterior draw,

    r = r0 + sigma_reach^2 F^T (sigma_reach^2 F F^T + sigma_pixel^2 I)^-1 (y - f(G(w_s)) - F r0 - n0),

with the linear system solved by conjugate gradients using f and its adjoint (autograd's
vector-Jacobian product), so no matrix is formed and it scales to 1024 px. Observed pixels then
stay within about sigma_pixel of y, and the unobserved ones (a hole, the detail lost by
downsampling) get the prior's residual on top of the spread of G(w).

The w posterior itself is left as the model defines it (the residual is a term of the predictive
only), so this is the paper's posterior with an honest error bar for the prior's reach, not a
different model of y.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.forward import Downsample, Identity, Mask

__all__ = ["check_linear", "reach_log_likelihood", "sample_reach_residual"]


def check_linear(f: nn.Module, shape: tuple[int, ...], device: torch.device | str = "cpu", seed: int = 0) -> None:
    """Raise ValueError unless f(a x1 + b x2) = a f(x1) + b f(x2) on random images of ``shape``."""
    gen = torch.Generator().manual_seed(seed)
    x1, x2 = (torch.rand(shape, generator=gen).to(device) for _ in range(2))
    with torch.no_grad():
        lhs = f(0.3 * x1 - 0.7 * x2)
        rhs = 0.3 * f(x1) - 0.7 * f(x2)
    scale = rhs.abs().max().clamp_min(1e-6)
    if not torch.allclose(lhs, rhs, atol=1e-4 * float(scale), rtol=1e-4):
        raise InputError(
            f"The prior-reach term needs a linear corruption f, and {type(f).__name__} is not linear "
            "(f(a x1 + b x2) != a f(x1) + b f(x2)); use the operators of brgm_pyro.forward or pass sigma_reach=None."
        )


def _gram_eigenbasis(forward: nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(U_H, lambda_H), (U_W, lambda_W): eigenvectors and eigenvalues of A A^T per axis of a separable
    Downsample (F F^T = A_H A_H^T (x) A_W A_W^T); None for operators with F F^T = I on observed pixels."""
    if isinstance(forward, (Mask, Identity)):
        return None
    if isinstance(forward, Downsample) and forward.kernel_name is not None:
        factor = forward.factor
        axes = []
        for size in y.shape[-2:]:
            a = forward._matrix(size * factor, y).double()
            values, vectors = torch.linalg.eigh(a @ a.T)
            axes.append((vectors.to(y.dtype), values.clamp_min(0).to(y.dtype)))
        return axes
    raise InputError(
        f"The prior's reach in the likelihood needs F F^T of the corruption, known here for Mask, Identity and "
        f"a named Downsample kernel, not {type(forward).__name__}; use model='learned-noise' for it."
    )


def reach_log_likelihood(
    residual: torch.Tensor,
    forward: nn.Module,
    observed: torch.Tensor | None,
    sigma_pixel: torch.Tensor,
    sigma_reach: float,
) -> torch.Tensor:
    """log N(y - f(G(w)); 0, sigma_reach^2 F F^T + sigma_pixel^2 I) over the observed pixels, per image.

    This is the likelihood of y given w once the reach residual r of the module docstring is
    integrated out: y = F (G(w) + r) + n. ``residual`` is y - f(G(w)), (B, C, h, w);
    ``sigma_pixel`` is (B,) or a float. Returns (B,).
    """
    sigma_pixel = torch.as_tensor(sigma_pixel, dtype=residual.dtype, device=residual.device)
    noise = sigma_pixel.reshape(-1, 1, 1, 1).square() if sigma_pixel.dim() else sigma_pixel.square()
    axes = _gram_eigenbasis(forward, residual)
    if axes is None:
        z, variance = residual, noise + sigma_reach**2
    else:
        (u_h, l_h), (u_w, l_w) = axes
        z = u_h.T @ residual @ u_w
        variance = noise + sigma_reach**2 * (l_h[:, None] * l_w[None, :])
    terms = z.square() / variance + torch.log(2 * torch.pi * variance)
    terms = terms.expand_as(z)
    if observed is not None:
        terms = terms * observed.to(terms.dtype).expand_as(terms)
    return -0.5 * terms.sum((-3, -2, -1))


def sample_reach_residual(
    residual: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    observed: torch.Tensor,
    image_shape: tuple[int, ...],
    sigma_reach: float,
    sigma_pixel: float | torch.Tensor,
    generator: torch.Generator | None = None,
    max_iterations: int = 200,
    tolerance: float = 1e-6,
) -> torch.Tensor:
    """Draws of r ~ p(r | y, w) for the model in the module docstring.

    Args:
        residual: y - f(G(w_s)) for each draw, (N, c, h, w) (draws and images flattened together).
        f: the linear corruption, applied to (N, C, H, W) images.
        observed: 0/1 mask broadcastable to ``residual`` (1 = observed).
        image_shape: (N, C, H, W) of the clean images.
        sigma_reach: std of the prior's residual per clean pixel (> 0).
        sigma_pixel: std of the observation noise, a float or a tensor broadcastable to ``residual``
            (per draw for the learned-noise model).
        generator: random generator of the prior draws (r0, n0).
        max_iterations, tolerance: conjugate gradients stops when the relative residual norm of every
            draw is below ``tolerance`` or after ``max_iterations``.

    Returns r, (N, C, H, W).
    """
    if not sigma_reach > 0:
        raise InputError(f"sigma_reach must be positive, got {sigma_reach!r}.")
    device, dtype = residual.device, residual.dtype
    observed = observed.to(device=device, dtype=dtype).expand_as(residual)
    sigma_pixel = torch.as_tensor(sigma_pixel, device=device, dtype=dtype)
    r0 = sigma_reach * torch.randn(image_shape, generator=generator, dtype=dtype).to(device)
    n0 = sigma_pixel * torch.randn(residual.shape, generator=generator, dtype=dtype).to(device)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return f(x) * observed

    probe = torch.zeros(image_shape, device=device, dtype=dtype, requires_grad=True)
    with torch.enable_grad():
        applied = forward(probe)

    def adjoint(v: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(applied, probe, grad_outputs=v, retain_graph=True)
        return grad

    def system(v: torch.Tensor) -> torch.Tensor:
        # (sigma_reach^2 F F^T + sigma_pixel^2 I) v on observed entries; identity on unobserved ones
        # (where the right-hand side is zero, so the solution stays zero there).
        with torch.no_grad():
            out = sigma_reach**2 * forward(adjoint(v)) + sigma_pixel**2 * v * observed
        return out + v * (1 - observed)

    with torch.no_grad():
        rhs = (residual - forward(r0) - n0) * observed
    solution = _conjugate_gradients(system, rhs, max_iterations, tolerance)
    with torch.no_grad():
        return r0 + sigma_reach**2 * adjoint(solution)


def _conjugate_gradients(apply, rhs: torch.Tensor, max_iterations: int, tolerance: float) -> torch.Tensor:
    """Solve apply(x) = rhs for a symmetric positive definite ``apply``, one system per leading index."""
    dims = tuple(range(1, rhs.dim()))

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dims, keepdim=True)

    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    rho = dot(residual, residual)
    target = tolerance**2 * rho.clamp_min(torch.finfo(rhs.dtype).tiny)
    for _ in range(max_iterations):
        if bool((rho <= target).all()):
            break
        applied = apply(direction)
        alpha = rho / dot(direction, applied).clamp_min(torch.finfo(rhs.dtype).tiny)
        x = x + alpha * direction
        residual = residual - alpha * applied
        rho_next = dot(residual, residual)
        direction = residual + (rho_next / rho.clamp_min(torch.finfo(rhs.dtype).tiny)) * direction
        rho = rho_next
    return x
