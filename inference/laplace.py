"""The Laplace whitening SVI and MCMC share: an affine NeuTra reparametrisation from the Hessian at the MAP.

Both drivers work on the potential ``U(z) = -log p(z, y)`` of the model's latents in their
unconstrained space, z the concatenation of every latent site (``initialize_at``: Pyro's
``initialize_model``, the identity for w, a log for a latent sigma_pixel). Near the MAP z0 the
posterior of w is far from isotropic: the data pin a few directions that are not coordinate axes,
the prior the others. With the Hessian H = V diag(lambda) V^T of U at z0 (``dense_hessian``), the
change of variables

    z = z0 + A u,      A = V diag(max(|lambda|, eigen_floor * median |lambda|))^(-1/2)

is what ``pyro.infer.reparam.NeuTraReparam`` does with a trained normalising flow (Hoffman et
al. 2019, "NeuTra-lizing bad geometry in HMC"), with the flow replaced by the affine map of the
Laplace approximation: for a Gaussian posterior u is exactly standard normal, and for any
posterior the change of variables is exact (its Jacobian is constant), so the samplers and the
ELBO target the model's posterior in u. ``mcmc`` runs NUTS and HMC on u; ``svi``'s "laplace"
guide fits a diagonal Gaussian in u, a full-covariance one in z.

Why the eigenvalues are floored rather than the Hessian inverted, as Pyro's
``AutoLaplaceApproximation`` does (its covariance is H^-1, through a Cholesky factor of H): with a
non-linear G the Hessian need not be positive definite. Besides the prior's precision 1 / w_std^2
and the data's Gauss-Newton term, it holds the residual times G's own curvature, which can make
eigenvalues small or negative (a non-convex posterior; the collapsed learned-noise likelihood is a
Student-t, not a Gaussian). There a Cholesky factor does not exist and H^-1 would give a negative
or enormous variance. ``|lambda|`` keeps each direction's curvature scale whatever its sign, and
the floor ``EIGEN_FLOOR`` times the median caps the scale of any direction at 1 / sqrt(floor) = 3.2
times the median one: a poor local picture makes the reparametrisation less useful, never wrong,
as A only needs to be invertible.

H has latent_dim^2 entries and costs latent_dim Hessian-vector products (about 10 s for the 32 px
prior's 1,024 latents on two CPU cores), so the drivers' "auto" settings use it up to
``MAX_LAPLACE_DIM`` latent coordinates (``fits_dense_hessian``; a 1024 px prior has 9,216).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer.autoguide.initialization import init_to_value
from pyro.infer.mcmc.util import initialize_model

from brgm_pyro.errors import InputError
from brgm_pyro.inference.params import init_to_prior_median

__all__ = [
    "EIGEN_FLOOR", "MAX_LAPLACE_DIM", "LaplaceWhitening", "block_hessians", "dense_hessian", "fits_dense_hessian",
    "initialize_at", "latent_dim",
]

MAX_LAPLACE_DIM = 4096
"""The most latent coordinates whose dense Hessian the "auto" settings compute."""
EIGEN_FLOOR = 0.1
"""The Hessian's eigenvalues are raised to at least this fraction of their median (module notes)."""


def latent_dim(params: dict[str, torch.Tensor]) -> int:
    """The number of latent coordinates z of the sites ``params`` (site -> unconstrained value)."""
    return sum(value.numel() for value in params.values())


def fits_dense_hessian(params: dict[str, torch.Tensor]) -> bool:
    """The "auto" rule of SVI's guide and MCMC's preconditioner: whiten when there are at most
    ``MAX_LAPLACE_DIM`` latent coordinates."""
    return latent_dim(params) <= MAX_LAPLACE_DIM


def initialize_at(model: Callable, model_kwargs: dict, init_values: dict[str, torch.Tensor]) -> tuple:
    """Pyro's ``initialize_model`` at ``init_values`` (constrained; other sites at their prior median):
    (unconstrained initial params, potential U, site transforms)."""
    init_params, potential_fn, transforms, _ = initialize_model(
        model,
        model_kwargs=model_kwargs,
        init_strategy=init_to_value(values=init_values, fallback=init_to_prior_median),
        max_plate_nesting=1,
    )
    return init_params, potential_fn, transforms


_NO_FORWARD_RULE = ("forward ad", "forward-mode", "functorch", "vmap", "batching rule", "batched")
"""Phrases of torch's errors for an operation without a forward-mode derivative or a batching rule."""


def _no_forward_rule(err: Exception) -> bool:
    """Whether ``err`` says that forward-over-reverse cannot run here (an operation without a forward-mode
    derivative or a vmap rule), rather than some other failure (out of memory, a bug) that must surface."""
    if isinstance(err, NotImplementedError):
        return True
    message = str(err).lower()
    return "out of memory" not in message and any(phrase in message for phrase in _NO_FORWARD_RULE)


def dense_hessian(
    fn: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, chunk: int = 64, mode: str = "auto"
) -> torch.Tensor:
    """The dense Hessian of the scalar fn at the vector z0, ``chunk`` rows at a time.

    ``mode="forward"``: forward-over-reverse, each row the Hessian-vector product ``jvp(grad fn)``
    with a unit vector, ``chunk`` of them vectorised by ``torch.func.vmap``. ``"reverse"``
    differentiates the gradient backwards again (``is_grads_batched``); for the 32 px prior on the
    CPU it is 3.2-3.6x slower (``benchmarks/posterior_speed.py``). ``"auto"`` takes ``"forward"``
    and falls back to ``"reverse"`` for a potential with an operation that has no forward-mode
    derivative or no batching rule; any other error (out of memory included) is raised."""
    if mode not in ("auto", "forward", "reverse"):
        raise InputError(f"Unknown Hessian mode {mode!r}; choose 'auto', 'forward' or 'reverse'.")
    z0 = z0.detach()
    eye = torch.eye(z0.numel(), dtype=z0.dtype, device=z0.device)
    hessian = None
    if mode != "reverse":
        gradient = torch.func.grad(fn)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(gradient, (z0,), (v,))[1]

        try:
            hessian = torch.cat([torch.func.vmap(hvp)(eye[i : i + chunk]) for i in range(0, z0.numel(), chunk)])
        except (NotImplementedError, RuntimeError) as err:
            if mode == "forward" or not _no_forward_rule(err):
                raise
    if hessian is None:
        z = z0.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(z), z, create_graph=True)
        rows = [
            torch.autograd.grad(grad, z, eye[i : i + chunk], retain_graph=True, is_grads_batched=True)[0]
            for i in range(0, z.numel(), chunk)
        ]
        hessian = torch.cat(rows)
    return (hessian + hessian.T) / 2


def block_hessians(
    fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], params: dict[str, torch.Tensor], blocks: int, chunk: int = 64,
) -> torch.Tensor:
    """The Hessians of a sum of ``blocks`` independent terms, fn = sum_k U_k(theta_k), at ``params``
    (site -> (blocks, ...): the latents of K images of a plate), (blocks, d, d) with d the coordinates
    of one block.

    The Hessian of fn is block-diagonal, so one Hessian-vector product with the same unit vector e_j
    in every block gives column j of every block's Hessian at once: d products, not K d
    (forward-over-reverse, ``chunk`` of them vectorised; reverse mode where an operation has no
    forward-mode rule, as in :func:`dense_hessian`)."""
    names = list(params)
    sizes = [params[name][0].numel() for name in names]
    shapes = [params[name].shape[1:] for name in names]
    z0 = torch.cat([params[name].detach().reshape(blocks, -1) for name in names], dim=1)  # (blocks, d)

    def total(z: torch.Tensor) -> torch.Tensor:
        parts = torch.split(z, sizes, dim=-1)
        return fn({n: part.reshape(blocks, *s) for n, part, s in zip(names, parts, shapes, strict=True)})

    dimension = z0.shape[1]
    eye = torch.eye(dimension, dtype=z0.dtype, device=z0.device)
    probes = eye[:, None, :].expand(dimension, blocks, dimension)
    columns = None
    try:
        gradient = torch.func.grad(total)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(gradient, (z0,), (v,))[1]

        columns = torch.cat([torch.func.vmap(hvp)(probes[i : i + chunk]) for i in range(0, dimension, chunk)])
    except (NotImplementedError, RuntimeError) as err:
        if not _no_forward_rule(err):
            raise
    if columns is None:
        z = z0.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(total(z), z, create_graph=True)
        columns = torch.cat([
            torch.autograd.grad(grad, z, probes[i : i + chunk], retain_graph=True, is_grads_batched=True)[0]
            for i in range(0, dimension, chunk)
        ])
    hessians = columns.permute(1, 0, 2)  # (blocks, d, d): block k, column j
    return (hessians + hessians.transpose(1, 2)) / 2


class LaplaceWhitening:
    """The affine change of variables z = z0 + A u (module notes).

    z is the vector of all unconstrained latents (sites in the order of ``params``, their values
    z0); A = V |Lambda|^(-1/2) from the eigendecomposition of the Hessian of ``potential_fn`` at z0,
    with the eigenvalues floored at ``eigen_floor`` times their median. Up to ``MAX_LAPLACE_DIM``
    latents; above, an InputError names ``option`` (the setting that asked for it) and
    ``fallback`` (what to pass instead).
    """

    def __init__(
        self,
        potential_fn: Callable,
        params: dict[str, torch.Tensor],
        eigen_floor: float,
        *,
        option: str,
        fallback: str,
        hessian: torch.Tensor | None = None,
    ) -> None:
        if not fits_dense_hessian(params):
            raise InputError(
                f"{option} needs the dense Hessian of {latent_dim(params)} latent coordinates (at most "
                f"{MAX_LAPLACE_DIM}); {fallback} for this generator."
            )
        self.potential_fn = potential_fn
        self.names = list(params)
        self.shapes = [params[name].shape for name in self.names]
        self.sizes = [params[name].numel() for name in self.names]
        self.z0 = torch.cat([params[name].detach().reshape(-1) for name in self.names])
        if hessian is None:  # (one computed elsewhere: ``block_hessians`` of several modes at once)
            hessian = dense_hessian(lambda z: potential_fn(self.unpack(z)), self.z0)
        eigenvalues, vectors = torch.linalg.eigh(hessian.double())
        scale = eigenvalues.abs().clamp_min(eigen_floor * eigenvalues.abs().median())
        self.A = (vectors * scale.rsqrt()).to(self.z0.dtype)
        self.eigenvalues = eigenvalues.to(self.z0.dtype)

    def unpack(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """(..., latent_dim) -> site name -> (..., *site shape)."""
        parts = torch.split(z, self.sizes, dim=-1)
        return {n: p.reshape(*z.shape[:-1], *s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def potential(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """U(z0 + A u) for ``params = {"u": u}``: the potential of the whitened coordinates."""
        return self.potential_fn(self.unpack(self.z0 + self.A @ params["u"]))

    def latents(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Draws of u (N, latent_dim) -> the unconstrained latents of the model, site -> (N, *shape)."""
        return self.unpack(self.z0 + u @ self.A.T)
