"""Where a guide starts and where it keeps its parameters.

``init_to_prior_median``: latents without a given starting value start at their prior's median, the
exact one where the distribution has an inverse CDF (a LogNormal blur width: its median exp(mu)),
else the median of 1,001 draws made with a fixed seed (Pyro's ``init_to_median`` draws 15 with the
global generator, so two runs, or two seeds, started elsewhere).

``local_params``: guides keep their parameters to themselves, Pyro's ``module_local_params``, so
that a library call never touches the user's global parameter store (``pyro.clear_param_store``
would wipe a notebook's own parameters, and a shared store would let two fits see each other's
values).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pyro
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.infer.autoguide.initialization import init_to_median

__all__ = ["MEDIAN_DRAWS", "init_to_prior_median", "local_params"]

MEDIAN_DRAWS = 1001
"""Draws of the prior whose median a latent starts at when its distribution has no inverse CDF."""


def _exact_median(fn: TorchDistributionMixin) -> torch.Tensor | None:
    """The median by the inverse CDF, through Independent wrappers; None where there is none."""
    base = fn
    while isinstance(base, torch.distributions.Independent):
        base = base.base_dist
    try:
        half = torch.full(base.batch_shape + base.event_shape, 0.5)
        return base.icdf(half).expand(fn.batch_shape + fn.event_shape)
    except (NotImplementedError, AttributeError, ValueError):
        return None


def init_to_prior_median(site: dict) -> torch.Tensor:
    """The prior median of a sample site (module notes), a Pyro initialisation strategy."""
    median = _exact_median(site["fn"])
    if median is not None and bool(torch.isfinite(median).all()):
        return median
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return init_to_median(site, num_samples=MEDIAN_DRAWS)


@contextlib.contextmanager
def local_params() -> Iterator[None]:
    """Within the block, an autoguide (a ``PyroModule``) holds its parameters as its own attributes, not in
    ``pyro.get_param_store()``. Fit a guide and draw from it inside the same block: outside one, a guide
    reads and registers its parameters in the global store."""
    with pyro.settings.context(module_local_params=True):
        yield
