"""Markov chain Monte Carlo for BRGM: Pyro's NUTS or HMC on the model's log joint, started at the MAP.

The kernels run on the potential ``U(z) = -log p(w, y)`` in the unconstrained space of the latents
(``pyro.infer.mcmc.util.initialize_model``: the identity for w, a log for a latent sigma_pixel),
with a diagonal mass matrix and the step size adapted during warm-up (dual averaging to the target
acceptance probability). NUTS doubles its trajectory until it turns, at most ``max_tree_depth``
times, which caps the cost of one draw at 2^max_tree_depth - 1 gradient evaluations; HMC takes
``trajectory_length / step_size`` leapfrog steps per draw.

Preconditioning (``precondition``): the posterior of w is far from isotropic. At the MAP of a
32 px super-resolution the Hessian of U has most eigenvalues near the prior's precision
1 / w_std^2 = 1.5 and a few up to 250 (the directions the data pin down), and these directions are
not the coordinate axes, so a diagonal mass matrix leaves NUTS with a step size of ~0.01 and every
trajectory at the depth cap. With ``"laplace"`` the kernel runs on the whitened coordinates u of
``brgm_pyro.inference.laplace``, z = z_MAP + A u from the Hessian at the starting point, and the
diagonal mass matrix, adapted in u, corrects the remaining scale of each eigen-direction. For a
Gaussian posterior u is exactly standard normal; on the 32 px prior the Hessian at the MAP is a
local picture of a non-linear G, and NUTS gets 5-20x the bulk ESS in the same time but still fills
its trees (docs/results/mcmc.md). It cannot whiten the funnel between a latent sigma_pixel
and the scale of w. The draws are mapped back to the model's sites, so R-hat and ESS are those of w
and sigma_pixel. ``"auto"`` whitens up to ``MAX_LAPLACE_DIM`` latent coordinates (the 32 px prior
has 1,024) and runs unpreconditioned above (a 1024 px prior has 9,216).

Chains run one after another in this process, each its own ``pyro.infer.MCMC`` with its own
warm-up, starting at the MAP plus a small jitter (so that R-hat can see chains that disagree).
Pyro's MCMC would run several chains in worker processes wherever it sees spare CPUs, and then its
per-draw statistics could not be collected. Per draw this driver records, through ``hook_fn``:
``diverging`` (the kernel's divergent transitions), ``step_size``, ``n_steps`` (gradient
evaluations of the draw, counted by wrapping the potential) and, for NUTS, ``tree_depth``
= ceil(log2(n_steps + 1)), the number of doublings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro.infer import HMC, MCMC, NUTS

from brgm_pyro.errors import InputError
from brgm_pyro.inference.laplace import (
    EIGEN_FLOOR,
    LaplaceWhitening,
    fits_dense_hessian,
    initialize_at,
)

__all__ = ["KERNELS", "PRECONDITIONERS", "MCMCRun", "MCMCSettings", "run_mcmc"]

KERNELS = ("nuts", "hmc")
PRECONDITIONERS = ("auto", "laplace", None)


@dataclass(frozen=True)
class MCMCSettings:
    """Settings of the sampler.

    Attributes:
        kernel: "nuts" or "hmc".
        num_samples: kept draws per chain.
        warmup_steps: adaptation draws per chain, discarded.
        num_chains: independent chains, run one after another.
        max_tree_depth: NUTS's cap on the trajectory doublings. 7 by default: on the 32 px prior
            every tree reaches the cap at depth 5 to 7, and depth 7 gave 2.8x the effective
            draws per gradient of depth 5 for the slowest monitored scalar (docs/results/mcmc.md).
        trajectory_length: HMC's integration time (leapfrog steps = trajectory_length / step_size).
        target_accept_prob: the acceptance probability the step size is adapted to.
        init_jitter: standard deviation of the Gaussian noise added to the MAP, in the unconstrained
            space (in u when preconditioned), to start each chain.
        precondition: "laplace" (run on the whitened coordinates u of the Hessian at the MAP; see
            the module notes), None (on the unconstrained latents), or "auto": "laplace" up to
            ``MAX_LAPLACE_DIM`` latent coordinates, None above.
        eigen_floor: the Hessian's eigenvalues are raised to at least this fraction of their median.
    """

    kernel: str = "nuts"
    num_samples: int = 100
    warmup_steps: int = 100
    num_chains: int = 2
    max_tree_depth: int = 7
    trajectory_length: float = 1.0
    target_accept_prob: float = 0.8
    init_jitter: float = 0.05
    precondition: str | None = "auto"
    eigen_floor: float = EIGEN_FLOOR

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise InputError(f"Unknown MCMC kernel {self.kernel!r}; choose one of: {', '.join(KERNELS)}.")
        if self.precondition not in PRECONDITIONERS:
            raise InputError(f"Unknown precondition {self.precondition!r}; choose 'auto', 'laplace' or None.")
        if not 0 < self.eigen_floor <= 1:
            raise InputError(f"eigen_floor must lie in (0, 1], got {self.eigen_floor!r}.")
        for name in ("num_samples", "num_chains", "max_tree_depth"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise InputError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}.")
        if not self.trajectory_length > 0:
            raise InputError(f"trajectory_length must be positive, got {self.trajectory_length!r}.")
        if not 0 < self.target_accept_prob < 1:
            raise InputError(f"target_accept_prob must lie in (0, 1), got {self.target_accept_prob!r}.")
        if not self.init_jitter >= 0:
            raise InputError(f"init_jitter must be non-negative, got {self.init_jitter!r}.")


@dataclass
class MCMCRun:
    """The draws of all chains.

    Attributes:
        samples: site -> (num_chains * num_samples, ...) draws in the constrained space, chain by chain.
        sample_stats: statistic -> (num_chains, num_samples): "diverging" (bool), "step_size",
            "n_steps" and, for NUTS, "tree_depth".
        acceptance_rate: per chain, the fraction of accepted proposals (HMC) or of draws that moved (NUTS).
        seconds: wall time per chain, warm-up included.
        setup_seconds: wall time of the preconditioner (the Hessian and its eigendecomposition; 0 without).
        hessian_eigenvalues: the Hessian's eigenvalues at the start (None without preconditioning).
    """

    samples: dict[str, torch.Tensor]
    sample_stats: dict[str, torch.Tensor]
    num_chains: int
    acceptance_rate: list[float]
    seconds: list[float]
    setup_seconds: float = 0.0
    hessian_eigenvalues: torch.Tensor | None = None


class _CountingPotential:
    """The potential U(z), counting its evaluations (one per leapfrog step)."""

    def __init__(self, potential_fn: Callable) -> None:
        self.potential_fn = potential_fn
        self.calls = 0

    def __call__(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        return self.potential_fn(params)


class _DrawRecorder:
    """``hook_fn`` of MCMC: the statistics of each kept draw."""

    def __init__(self, potential: _CountingPotential) -> None:
        self.potential = potential
        self.seen_calls = 0
        self.seen_divergences = 0
        self.stats: dict[str, list] = {"diverging": [], "step_size": [], "n_steps": []}
        self.acceptance_rate = float("nan")

    def __call__(self, kernel: HMC, params: dict, stage: str, i: int) -> None:
        n_steps = self.potential.calls - self.seen_calls
        self.seen_calls = self.potential.calls
        if not stage.startswith("Sample"):
            return
        diagnostics = kernel.diagnostics()
        divergences = len(diagnostics["divergences"])
        self.stats["diverging"].append(divergences > self.seen_divergences)
        self.seen_divergences = divergences
        self.stats["step_size"].append(float(kernel.step_size))
        self.stats["n_steps"].append(n_steps)
        self.acceptance_rate = float(diagnostics["acceptance rate"])


def _kernel(potential: Callable, settings: MCMCSettings, transforms: dict) -> HMC:
    common = dict(
        potential_fn=potential,
        transforms=transforms,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        full_mass=False,
        target_accept_prob=settings.target_accept_prob,
    )
    if settings.kernel == "nuts":
        return NUTS(max_tree_depth=settings.max_tree_depth, **common)
    return HMC(trajectory_length=settings.trajectory_length, **common)


def run_mcmc(
    model: Callable,
    model_kwargs: dict,
    init_values: dict[str, torch.Tensor],
    settings: MCMCSettings,
    seed: int = 0,
    progress: bool = True,
) -> MCMCRun:
    """Sample ``model(**model_kwargs)`` with the kernel of ``settings``, chains starting near ``init_values``
    (constrained values of latent sites, e.g. the MAP w; other sites start at their prior median)."""
    init_params, potential_fn, site_transforms = initialize_at(model, model_kwargs, init_values)
    precondition = settings.precondition
    if precondition == "auto":
        precondition = "laplace" if fits_dense_hessian(init_params) else None
    whitening, setup_seconds, transforms = None, 0.0, site_transforms
    if precondition == "laplace":
        began = time.perf_counter()
        whitening = LaplaceWhitening(
            potential_fn, init_params, settings.eigen_floor,
            option="precondition='laplace'", fallback="pass precondition=None",
        )
        setup_seconds = time.perf_counter() - began
        init_params, potential_fn, transforms = {"u": torch.zeros_like(whitening.z0)}, whitening.potential, {}
    chains: list[dict[str, torch.Tensor]] = []
    recorders: list[_DrawRecorder] = []
    seconds = []
    for chain in range(settings.num_chains):
        pyro.set_rng_seed(seed + chain)
        start = {name: z + settings.init_jitter * torch.randn_like(z) for name, z in init_params.items()}
        potential = _CountingPotential(potential_fn)
        recorder = _DrawRecorder(potential)
        mcmc = MCMC(
            _kernel(potential, settings, transforms),
            num_samples=settings.num_samples,
            warmup_steps=settings.warmup_steps,
            initial_params=start,
            num_chains=1,
            hook_fn=recorder,
            disable_progbar=not progress,
            transforms=transforms,
        )
        began = time.perf_counter()
        mcmc.run(**model_kwargs)
        seconds.append(time.perf_counter() - began)
        chains.append({name: value.detach() for name, value in mcmc.get_samples().items()})
        recorders.append(recorder)
    samples = {name: torch.cat([chain[name] for chain in chains]) for name in chains[0]}
    if whitening is not None:
        with torch.no_grad():
            unconstrained = whitening.latents(samples.pop("u"))
            samples = {name: site_transforms[name].inv(value) for name, value in unconstrained.items()}
    stats = {
        name: torch.tensor([recorder.stats[name] for recorder in recorders])
        for name in ("diverging", "step_size", "n_steps")
    }
    if settings.kernel == "nuts":
        stats["tree_depth"] = torch.tensor(
            [[math.ceil(math.log2(n + 1)) for n in recorder.stats["n_steps"]] for recorder in recorders]
        )
    return MCMCRun(
        samples=samples,
        sample_stats=stats,
        num_chains=settings.num_chains,
        acceptance_rate=[recorder.acceptance_rate for recorder in recorders],
        seconds=seconds,
        setup_seconds=setup_seconds,
        hessian_eigenvalues=None if whitening is None else whitening.eigenvalues,
    )
