"""The "tv" baseline: total-variation regularised least squares, solved by deepinv's proximal gradient descent.

    x_hat = argmin_x  1/2 ||f(x) - y||^2 + lambda_reg L TV(x),    TV(x) = sum_i ||(grad x)_i||_2

(isotropic TV, ``deepinv.optim.TVPrior``), with L = ||f||^2 the largest eigenvalue of f^T f (power
iteration). L puts lambda_reg on one scale for every f: a mask has L = 1, a k-fold downsampling about
1 / k^2 (it averages k x k pixels), and each proximal gradient step (``deepinv.optim.PGD``, step 1 / L)
then shrinks the total variation with the same threshold lambda_reg. Started from the least-squares
solution f^+ y, for ``iterations`` steps; the proximal step of TV is deepinv's ``TVDenoiser``,
warm-started, with ``inner_iterations`` iterations per step. The classical prior a user reaches for when no training
data exist: no network, no training. The default lambda_reg was chosen on Fashion-MNIST validation
images (docs/results/diffusion.md).
"""

from __future__ import annotations

import torch
from torch import nn

from brgm_pyro.baselines.common import check_observation, clean_shape
from brgm_pyro.baselines.deepinv_physics import as_physics, require_deepinv
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Operator

__all__ = ["tv"]


def tv(y: torch.Tensor, f: Operator, G: nn.Module | None = None, lambda_reg: float = 0.01, iterations: int = 1000,
       inner_iterations: int = 20) -> torch.Tensor:
    """The TV-regularised reconstruction of y: images (B, C, H, W) in [0, 1] (module notes).

    Args:
        y, f, G: as for ``bp.reconstruct``; G only fixes the image size.
        lambda_reg: the weight of TV against the data term, in units of ||f||^2 (images in [0, 1]).
        iterations: proximal gradient steps.
        inner_iterations: iterations of the TV proximal step's own solver per step.
    """
    check_observation(y, f)
    for name, value in (("iterations", iterations), ("inner_iterations", inner_iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive whole number, got {value!r}.")
    if isinstance(lambda_reg, bool) or not isinstance(lambda_reg, (int, float)) or not lambda_reg > 0:
        raise InputError(f"lambda_reg must be a positive number, got {lambda_reg!r}.")
    shape = clean_shape(y, f, G)
    deepinv = require_deepinv()
    physics = as_physics(f, shape)
    with torch.no_grad():
        start = physics.A_dagger(y)
        lipschitz = float(physics.compute_sqnorm(torch.rand(shape, generator=torch.Generator().manual_seed(0)),
                                                 verbose=False))
        solver = deepinv.optim.PGD(data_fidelity=deepinv.optim.L2(), prior=deepinv.optim.TVPrior(n_it_max=inner_iterations),
                                   lambda_reg=lambda_reg * lipschitz, stepsize=1 / lipschitz, max_iter=iterations)
        return solver(y, physics, init=start).clamp(0, 1)
