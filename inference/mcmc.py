"""Markov chain Monte Carlo for BRGM: Pyro's NUTS or HMC on the model's log joint, started at the MAP.

The kernels run on the potential ``U(z) = -log p(w, y)`` in the unconstrained space of the latents
(``pyro.infer.mcmc.util.initialize_model``: the identity for w, a log for a latent sigma_pixel),
with a diagonal mass matrix and the step size adapted during warm-up (dual averaging to the target
acceptance probability). NUTS doubles its trajectory until it turns, at most ``max_tree_depth``
times, which caps the cost of one draw at 2^max_tree_depth - 1 gradient evaluations; HMC takes
``trajectory_length / step_size`` leapfrog steps per draw.

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
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.infer.mcmc.util import initialize_model

__all__ = ["KERNELS", "MCMCRun", "MCMCSettings", "run_mcmc"]

KERNELS = ("nuts", "hmc")


@dataclass(frozen=True)
class MCMCSettings:
    """Settings of the sampler.

    Attributes:
        kernel: "nuts" or "hmc".
        num_samples: kept draws per chain.
        warmup_steps: adaptation draws per chain, discarded.
        num_chains: independent chains, run one after another.
        max_tree_depth: NUTS's cap on the trajectory doublings.
        trajectory_length: HMC's integration time (leapfrog steps = trajectory_length / step_size).
        target_accept_prob: the acceptance probability the step size is adapted to.
        init_jitter: standard deviation of the Gaussian noise added to the MAP, in the unconstrained
            space, to start each chain.
    """

    kernel: str = "nuts"
    num_samples: int = 100
    warmup_steps: int = 100
    num_chains: int = 2
    max_tree_depth: int = 6
    trajectory_length: float = 1.0
    target_accept_prob: float = 0.8
    init_jitter: float = 0.05

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"Unknown MCMC kernel {self.kernel!r}; choose one of: {', '.join(KERNELS)}.")
        for name in ("num_samples", "num_chains", "max_tree_depth"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ValueError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}.")
        if not self.trajectory_length > 0:
            raise ValueError(f"trajectory_length must be positive, got {self.trajectory_length!r}.")
        if not 0 < self.target_accept_prob < 1:
            raise ValueError(f"target_accept_prob must lie in (0, 1), got {self.target_accept_prob!r}.")
        if not self.init_jitter >= 0:
            raise ValueError(f"init_jitter must be non-negative, got {self.init_jitter!r}.")


@dataclass
class MCMCRun:
    """The draws of all chains.

    Attributes:
        samples: site -> (num_chains * num_samples, ...) draws in the constrained space, chain by chain.
        sample_stats: statistic -> (num_chains, num_samples): "diverging" (bool), "step_size",
            "n_steps" and, for NUTS, "tree_depth".
        acceptance_rate: per chain, the fraction of accepted proposals (HMC) or of draws that moved (NUTS).
        seconds: wall time per chain, warm-up included.
    """

    samples: dict[str, torch.Tensor]
    sample_stats: dict[str, torch.Tensor]
    num_chains: int
    acceptance_rate: list[float]
    seconds: list[float]


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
    init_params, potential_fn, transforms, _ = initialize_model(
        model,
        model_kwargs=model_kwargs,
        init_strategy=init_to_value(values=init_values, fallback=init_to_median),
        max_plate_nesting=1,
    )
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
    )
