"""F F^T of a linear operator on its observed outputs: what a Gaussian posterior over the clean image needs.

For y = F r + n with r ~ Normal(0, a I) per clean pixel and n ~ Normal(0, b I) per observed
output, y ~ Normal(0, a F F^T + b I) on the observed outputs. A ``Gram`` holds F F^T restricted to
those outputs in the form that makes this cheap, and gives

    gram.log_density(v, a, b)   log Normal(v; 0, a F F^T + b I) per image, over the observed outputs
    gram.solve(v, a, b)         (a F F^T + b I)^-1 v on the observed outputs, 0 on the others

for residuals v (B, C, h, w), a >= 0 a number and b > 0 a number or one per image (B,). Both are
differentiable in v and b. The forms, exact unless said:

- ``EyeGram``: F F^T = I on the observed pixels (a Mask, the identity).
- ``KroneckerGram``: f(x) = M_H x M_W^T (a named Downsample, a separable Blur, their compositions),
  so F F^T = (M_H M_H^T) (x) (M_W M_W^T), diagonalised by the eigenvectors of each axis.
- ``FourierGram``: a circular blur, F F^T = Q^H diag(|k^|^2) Q with Q the unitary 2-D DFT.
- ``DenseGram``: any linear f on images of up to ``forward.MAX_DENSE_PIXELS`` values: F's matrix
  (observed rows) is formed from f, F F^T is eigendecomposed once.
- ``IterativeGram``: any linear f, any size: solves by conjugate gradients with f and its adjoint;
  the log-determinant by stochastic Lanczos quadrature (Ubaru, Chen and Saad 2017): Hutchinson's
  trace estimator of log(a F F^T + b I) with ``LANCZOS_PROBES`` Rademacher probes, each quadratic
  form by ``LANCZOS_STEPS`` Lanczos steps. Its error is that of Hutchinson's estimator, standard
  deviation sqrt(2 sum_{i != j} L_ij^2 / probes) for L = log(a F F^T + b I) (the tests hold it to
  four of those against ``DenseGram``); it changes with b only, so it shifts the likelihood of a
  noise level, never the gradient in w.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from brgm_pyro.forward.base import Operator

__all__ = [
    "DenseGram", "EigenGram", "EyeGram", "FourierGram", "Gram", "IterativeGram", "KroneckerGram",
    "conjugate_gradients", "dense_matrix", "projection_diagonal",
]

LANCZOS_PROBES = 8
LANCZOS_STEPS = 40


def _per_image(b: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """b as a tensor broadcastable to ``like`` (B, ...): a number, or one value per image (B,)."""
    b = torch.as_tensor(b, dtype=like.dtype, device=like.device)
    return b.reshape(-1, *([1] * (like.dim() - 1))) if b.dim() else b


def projection_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """diag(A^+ A) for a matrix A (m, n): squared column norms of the right singular vectors kept."""
    _, singular, vh = torch.linalg.svd(matrix, full_matrices=False)
    if singular.numel() == 0 or not singular.max() > 0:
        return torch.zeros(matrix.shape[1], dtype=matrix.dtype)
    keep = singular > singular.max() * max(matrix.shape) * torch.finfo(matrix.dtype).eps
    return vh[keep].square().sum(0)


class Gram:
    """F F^T on the observed outputs of a linear f (module notes)."""

    def log_density(self, v: torch.Tensor, a: float, b: float | torch.Tensor) -> torch.Tensor:
        """log Normal(v; 0, a F F^T + b I) over the observed outputs, per image: (B,)."""
        raise NotImplementedError

    def solve(self, v: torch.Tensor, a: float, b: float | torch.Tensor) -> torch.Tensor:
        """(a F F^T + b I)^-1 v on the observed outputs, 0 elsewhere: v's shape."""
        raise NotImplementedError


class EigenGram(Gram):
    """F F^T = U diag(lambda) U^T: subclasses give the transform to the eigenbasis and back, the
    eigenvalues and which eigen-coordinates count (the observed ones)."""

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_eigen(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    eigenvalues: torch.Tensor
    weight: torch.Tensor | float = 1.0
    observed: torch.Tensor | float = 1.0  # the observed outputs, where a solution may be non-zero

    def _variance(self, z: torch.Tensor, a: float, b: float | torch.Tensor) -> torch.Tensor:
        return a * self.eigenvalues.to(z.real.dtype) + _per_image(b, z.real)

    def log_density(self, v: torch.Tensor, a: float, b: float | torch.Tensor) -> torch.Tensor:
        z = self.to_eigen(v)
        variance = self._variance(z, a, b)
        weight = torch.as_tensor(self.weight, dtype=variance.dtype, device=variance.device)
        terms = (z.abs().square() / variance + torch.log(2 * math.pi * variance)) * weight
        return -0.5 * terms.expand(z.shape).flatten(1).sum(1)

    def solve(self, v: torch.Tensor, a: float, b: float | torch.Tensor) -> torch.Tensor:
        z = self.to_eigen(v)
        weight = torch.as_tensor(self.weight, dtype=z.real.dtype, device=v.device)
        observed = torch.as_tensor(self.observed, dtype=v.dtype, device=v.device)
        return self.from_eigen(z / self._variance(z, a, b) * weight) * observed


class EyeGram(EigenGram):
    """F F^T = I on the observed outputs (``observed``: 0/1, broadcastable to y)."""

    def __init__(self, observed: torch.Tensor) -> None:
        self.weight = observed
        self.eigenvalues = torch.ones((), dtype=observed.dtype, device=observed.device)

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        return v * self.weight.to(v.dtype)

    def from_eigen(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.weight.to(z.dtype)


class KroneckerGram(EigenGram):
    """F F^T = (M_H M_H^T) (x) (M_W M_W^T) for f(x) = M_H x M_W^T, every output observed."""

    def __init__(self, m_h: torch.Tensor, m_w: torch.Tensor, dtype: torch.dtype, device: torch.device) -> None:
        axes = []
        for matrix in (m_h, m_w):
            values, vectors = torch.linalg.eigh(matrix.double() @ matrix.double().T)
            axes.append((vectors.to(device=device, dtype=dtype), values.clamp_min(0).to(device=device, dtype=dtype)))
        (self.u_h, l_h), (self.u_w, l_w) = axes
        self.eigenvalues = l_h[:, None] * l_w[None, :]

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        return self.u_h.T.to(v.dtype) @ v @ self.u_w.to(v.dtype)

    def from_eigen(self, z: torch.Tensor) -> torch.Tensor:
        return self.u_h.to(z.dtype) @ z @ self.u_w.T.to(z.dtype)


class FourierGram(EigenGram):
    """F F^T = Q^H diag(|k^|^2) Q for a circular convolution with ``kernel`` on (H, W) images."""

    def __init__(self, kernel: torch.Tensor, height: int, width: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        # |k^| does not depend on where the kernel sits on the circle, nor on its flip.
        padded = torch.zeros(height, width, dtype=torch.float64)
        padded[: kernel.shape[0], : kernel.shape[1]] = kernel.double().cpu()
        self.eigenvalues = torch.fft.fft2(padded).abs().square().to(device=device, dtype=dtype)

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(v, norm="ortho")

    def from_eigen(self, z: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(z, norm="ortho").real


def dense_matrix(f: Operator, shape: Sequence[int], observed: torch.Tensor, device: torch.device,
                 dtype: torch.dtype, chunk: int = 256) -> torch.Tensor:
    """F per image, its rows of unobserved outputs zeroed: (B, m, n) for images of ``shape`` (B, C, H, W),
    n = C H W inputs and m outputs; column j is f of the j-th unit image (every image of the batch at once)."""
    batch, channels, height, width = shape
    size = channels * height * width
    observed = observed.to(device=device, dtype=dtype)
    columns = []
    with torch.no_grad():
        for start in range(0, size, chunk):
            count = min(chunk, size - start)
            basis = torch.zeros(count, size, device=device, dtype=dtype)
            basis[torch.arange(count), torch.arange(start, start + count)] = 1
            x = basis.reshape(count, 1, channels, height, width).expand(count, batch, channels, height, width)
            out = f.tile(count)(x.reshape(count * batch, channels, height, width))
            out = out.reshape(count, batch, *out.shape[1:]) * observed
            columns.append(out.flatten(2))
    return torch.cat(columns).permute(1, 2, 0)


class DenseGram(EigenGram):
    """F F^T formed from F's dense matrix (observed rows) and eigendecomposed, one per image when f
    treats the images differently. Unobserved outputs get eigenvalue -1 (their rows of F F^T are
    zero, so their unit vectors are eigenvectors of their own) and weight 0."""

    def __init__(self, vectors: torch.Tensor, values: torch.Tensor, output_shape: Sequence[int],
                 observed: torch.Tensor) -> None:
        self.vectors = vectors  # (images, m, m)
        self.output_shape = tuple(output_shape[1:])
        self.observed = observed
        self.weight = (values > -0.5).to(values.dtype).reshape(values.shape[0], *self.output_shape)
        self.eigenvalues = values.clamp_min(0).reshape(values.shape[0], *self.output_shape)

    @classmethod
    def of(cls, f: Operator, shape: Sequence[int], observed: torch.Tensor, device: torch.device,
           dtype: torch.dtype) -> DenseGram:
        batch, channels, height, width = shape
        images = batch if f.per_image else 1
        matrices = dense_matrix(f, (images, channels, height, width), observed, device, torch.float64)
        gram = matrices @ matrices.transpose(1, 2)
        out_shape = f.output_shape((images, channels, height, width))
        unobserved = 1 - observed.to(device=device, dtype=torch.float64).expand(out_shape).reshape(images, -1)
        gram = gram - torch.diag_embed(unobserved)
        values, vectors = torch.linalg.eigh(gram)
        return cls(vectors.to(dtype), values.to(dtype), out_shape, observed.to(device=device, dtype=dtype))

    def to_eigen(self, v: torch.Tensor) -> torch.Tensor:
        flat = v.flatten(1)
        z = torch.einsum("bm,bmk->bk", flat, self.vectors.to(v.dtype).expand(flat.shape[0], -1, -1))
        return z.reshape(v.shape)

    def from_eigen(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)
        v = torch.einsum("bk,bmk->bm", flat, self.vectors.to(z.dtype).expand(flat.shape[0], -1, -1))
        return v.reshape(z.shape)


def conjugate_gradients(apply, rhs: torch.Tensor, max_iterations: int = 1000, tolerance: float | None = None
                        ) -> torch.Tensor:
    """Solve apply(x) = rhs for a symmetric positive definite ``apply``, one system per leading index;
    stops when every system's relative residual norm is below ``tolerance`` (default: 1e-10 in float64,
    1e-6 in float32)."""
    if tolerance is None:
        tolerance = 1e-10 if rhs.dtype == torch.float64 else 1e-6
    dims = tuple(range(1, rhs.dim()))
    tiny = torch.finfo(rhs.dtype).tiny

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dims, keepdim=True)

    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    rho = dot(residual, residual)
    target = tolerance**2 * rho.clamp_min(tiny)
    for _ in range(max_iterations):
        if bool((rho <= target).all()):
            break
        applied = apply(direction)
        alpha = rho / dot(direction, applied).clamp_min(tiny)
        x = x + alpha * direction
        residual = residual - alpha * applied
        rho_next = dot(residual, residual)
        direction = residual + (rho_next / rho.clamp_min(tiny)) * direction
        rho = rho_next
    return x


class _Quadratic(torch.autograd.Function):
    """v^T M^-1 v per image with M = a F F^T + b I solved by ``gram``; the gradients are 2 M^-1 v for
    v and -|M^-1 v|^2 for b, so the solve is never differentiated through."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, b: torch.Tensor, gram: IterativeGram, a: float) -> torch.Tensor:
        with torch.no_grad():
            solution = gram.solve(v, a, b)
        ctx.save_for_backward(solution)
        ctx.b_shape = b.shape
        return (v * solution).flatten(1).sum(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (solution,) = ctx.saved_tensors
        scale = grad.reshape(-1, *([1] * (solution.dim() - 1)))
        grad_b = -(solution.square() * scale).flatten(1).sum(1)
        grad_b = grad_b.sum().reshape(ctx.b_shape) if len(ctx.b_shape) == 0 else grad_b.reshape(ctx.b_shape)
        return 2 * scale * solution, grad_b, None, None


class IterativeGram(Gram):
    """F F^T applied as f(f.adjoint(.)) on the observed outputs: solves by conjugate gradients, the
    log-determinant by stochastic Lanczos quadrature (module notes). Its Lanczos nodes are computed
    once per batch of residuals, for a fixed set of probes (seed 0), so the log-density is a smooth,
    deterministic function of v and b."""

    def __init__(self, f: Operator, shape: Sequence[int], observed: torch.Tensor,
                 probes: int = LANCZOS_PROBES, steps: int = LANCZOS_STEPS) -> None:
        self.f, self.shape, self.observed = f, tuple(shape), observed
        self.probes, self.steps = probes, steps
        self._nodes: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        observed = self.observed.to(v.dtype)
        with torch.no_grad():
            return self.f(self.f.adjoint(v * observed)) * observed

    def solve(self, v: torch.Tensor, a: float, b: float | torch.Tensor) -> torch.Tensor:
        observed = self.observed.to(v.dtype).expand_as(v)
        b = _per_image(b, v)

        def system(u: torch.Tensor) -> torch.Tensor:
            # identity on the unobserved entries, where the right-hand side is 0
            return a * self._apply(u) + b * u * observed + u * (1 - observed)

        return conjugate_gradients(system, v * observed)

    def _lanczos(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes theta and weights tau, (B, probes, steps), of each image's spectral measure of F F^T."""
        key = (tuple(like.shape), like.device, like.dtype)
        if key in self._nodes:
            return self._nodes[key]
        batch = like.shape[0]
        observed = self.observed.to(like.dtype).expand_as(like)
        f = self.f.tile(self.probes)
        gen = torch.Generator().manual_seed(0)
        signs = torch.randint(0, 2, (self.probes, *like.shape), generator=gen).to(like) * 2 - 1
        q = (signs * observed).flatten(0, 1)  # (probes * B, ...), probe-major as f.tile expects
        mask = observed.repeat(self.probes, 1, 1, 1)
        dims = tuple(range(1, q.dim()))
        q = q / q.square().sum(dims, keepdim=True).sqrt().clamp_min(1e-30)
        basis, alphas, betas = [q], [], []
        with torch.no_grad():
            for step in range(self.steps):
                w = f(f.adjoint(basis[-1] * mask)) * mask
                alpha = (w * basis[-1]).sum(dims, keepdim=True)
                alphas.append(alpha.flatten())
                for previous in basis:  # full reorthogonalisation
                    w = w - (w * previous).sum(dims, keepdim=True) * previous
                beta = w.square().sum(dims, keepdim=True).sqrt()
                if step == self.steps - 1 or bool((beta < 1e-10).all()):
                    break
                betas.append(beta.flatten())
                basis.append(w / beta.clamp_min(1e-30))
        k = len(alphas)
        tridiagonal = torch.diag_embed(torch.stack(alphas, -1).double())
        if betas:
            off = torch.stack(betas, -1).double()
            tridiagonal = tridiagonal + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        theta, vectors = torch.linalg.eigh(tridiagonal)
        tau = vectors[:, 0, :].square()
        nodes = (theta.clamp_min(0).reshape(self.probes, batch, k).transpose(0, 1).to(like.dtype),
                 tau.reshape(self.probes, batch, k).transpose(0, 1).to(like.dtype))
        self._nodes[key] = nodes
        return nodes

    def log_density(self, v: torch.Tensor, a: float, b: float | torch.Tensor) -> torch.Tensor:
        b_tensor = torch.as_tensor(b, dtype=v.dtype, device=v.device)
        quadratic = _Quadratic.apply(v, b_tensor, self, a)
        count = self.observed.to(v.dtype).expand_as(v).flatten(1).sum(1)
        theta, tau = self._lanczos(v)
        b_image = b_tensor.reshape(-1, 1, 1) if b_tensor.dim() else b_tensor
        logdet = count * (tau * torch.log(a * theta + b_image)).sum(-1).mean(-1)
        return -0.5 * (quadratic + logdet + count * math.log(2 * math.pi))
