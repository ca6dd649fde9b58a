"""The mode search and the mixture posterior where the exact posterior is known: a generator with a 1-D latent
whose posterior, computed on a grid, has two separated modes; and the prior bank's cache.

The toy generator draws a 2 x 2 image from one latent w (mapping = identity, so G's own prior is
N(0, 1)): pixel 1 = 0.5 + 0.4 sin(2 w), pixel 2 = 0.5 + 0.05 w, the others 0.5. Observing pixel 1
= 0.5 + 0.4 sin(2.4) fits w = 0.37 and w = 1.2 equally; pixel 2 favours 1.2, so the posterior has
a lower mode near 0.37, which the single start from w_avg = 0 reaches, and a higher one near 1.2,
behind a barrier of about 19 nats where sin(2 w) peaks (w = pi / 4).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import brgm_pyro as bp
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Identity
from brgm_pyro.inference.map import log_joint
from brgm_pyro.models import brgm
from brgm_pyro.problem import prepare_problem
from brgm_pyro.search import SearchSettings
from brgm_pyro.search.bank import BankNote, PriorBank, cache_folder

SIGMA = 0.02
TRUE_W = 1.2
BARRIER = math.pi / 4


class ToyGenerator(nn.Module):
    """A 2 x 2 grayscale "StyleGAN2" with one latent (module notes)."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim = self.w_dim = self.num_ws = 1
        self.resolution, self.channels = 2, 1
        self.config = {"kind": "toy"}
        self.register_buffer("w_avg", torch.zeros(1))
        self.register_buffer("w_std", torch.ones(()))

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        return z[:, None, :]

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const", resolution: int | None = None) -> torch.Tensor:
        w = ws[:, 0, 0]
        pixels = torch.stack([0.5 + 0.4 * torch.sin(2 * w), 0.5 + 0.05 * w, 0.5 + 0 * w, 0.5 + 0 * w], dim=1)
        return (2 * pixels - 1).reshape(-1, 1, 2, 2)


@pytest.fixture(scope="module")
def toy():
    G = ToyGenerator()
    with torch.no_grad():
        y = (G.synthesis(torch.full((1, 1, 1), TRUE_W)) + 1) / 2
    return G, y, bp.BRGMParams(sigma_pixel=SIGMA, kappa=0.0)


def _grid(G, y, params):
    """The exact posterior of w on a grid, from the model's own log density: (w, probabilities)."""
    w = torch.linspace(-5, 5, 40_001, dtype=torch.float64)
    problem = prepare_problem(y.double(), Identity(), G.double(), params, perceptual=None)
    kwargs = problem.model_kwargs()
    log_p = torch.cat([log_joint(brgm.model, {**kwargs, "y": kwargs["y"].expand(len(chunk), -1, -1, -1)},
                                 chunk[:, None, None]) for chunk in w.split(4000)])
    G.float()
    p = torch.exp(log_p - log_p.max())
    return w, p / p.sum()


def test_the_single_start_lands_in_the_lower_mode_and_the_search_finds_both(toy):
    G, y, params = toy
    single = bp.reconstruct(y, Identity(), G, params=params, perceptual=None, search=None, steps=300, lr=0.02,
                            sigma_reach=None, progress=False)
    searched = bp.reconstruct(y, Identity(), G, params=params, perceptual=None, steps=300, lr=0.02,
                              sigma_reach=None, search=SearchSettings(bank_size=4096, modes=4),
                              progress=False)
    assert float(single.w) < BARRIER  # the start at w_avg = 0 stays on its side of the barrier
    assert float(searched.w) == pytest.approx(TRUE_W, abs=0.02)
    modes = searched.modes.latents["w"][:, 0, 0, 0]
    assert (modes < BARRIER).any() and (modes > BARRIER).any()  # both modes are among the K
    assert float(searched.modes.log_joint.max()) > -float(single.losses["total"][-1]) + 1


def test_the_mixture_weights_and_mean_match_the_grid(toy):
    G, y, params = toy
    w, p = _grid(G, y, params)
    upper_mass = float(p[w > BARRIER].sum())
    with torch.no_grad():
        images = (G.synthesis(w[:, None, None].float()) + 1) / 2
    exact_mean = (p.float()[:, None, None, None] * images).sum(0)
    post = bp.sample_posterior(y, Identity(), G, model="brgm", params=params, perceptual=None, sigma_reach=None,
                               num_samples=4000, search=SearchSettings(bank_size=4096, modes=4),
                               map_schedule=bp.MAPSchedule(steps=300, lr=0.02), progress=False, calibration=None)
    weights = post.modes.weights[:, 0]
    modes = post.map.modes.latents["w"][:, 0, 0, 0]
    found_upper = float(weights[modes > BARRIER].sum())
    # Laplace's weight of each basin within 0.03 of its exact mass (both basins are nearly Gaussian here)
    assert 0.5 < upper_mass < 0.95
    assert found_upper == pytest.approx(upper_mass, abs=0.03)
    # the posterior mean: 4000 draws, Monte Carlo error of pixel 2 about 0.02 / sqrt(4000)
    torch.testing.assert_close(post.mean[0], exact_mean, atol=2e-3, rtol=0)
    draws = post.latents["w"][:, 0, 0, 0]
    assert float((draws > BARRIER).float().mean()) == pytest.approx(upper_mass, abs=0.03)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"modes": 0}, "modes must be a positive integer"),
        ({"bank_size": 0}, "bank_size must be a positive integer"),
        ({"screen": -1}, "screen must be a positive integer"),
        ({"min_distance": -0.1}, "min_distance must be a non-negative number"),
        ({"modes": 1}, "pass search=None instead"),
        ({"steps": 0}, "steps must be a positive integer or None"),
        ({"prune_at": 0}, "prune_at must be a fraction in"),
        ({"prune_at": 1.5}, "prune_at must be a fraction in"),
    ],
)
def test_bad_search_settings_get_one_sentence(settings, message):
    with pytest.raises(InputError, match=message):
        SearchSettings(**settings)


def test_the_bank_is_cached_checked_and_rebuilt_when_corrupt(toy, tmp_path):
    G, _, _ = toy
    bank = PriorBank.load_or_build(G, 256, folder=tmp_path)
    assert bank.size == 256 and bank.path.parent == tmp_path
    assert PriorBank.load_or_build(G, 256, folder=tmp_path).path == bank.path  # read, not rebuilt
    with torch.no_grad():
        _, z, w, images = next(bank.chunks(256))
        torch.testing.assert_close(w, G.mapping(z)[:, 0])
        torch.testing.assert_close(images, ((G.synthesis(G.mapping(z)) + 1) / 2).half().float())
    bank.path.write_bytes(bank.path.read_bytes()[:1000])  # truncated
    with pytest.warns(BankNote, match="is rebuilt"):
        rebuilt = PriorBank.load_or_build(G, 256, folder=tmp_path)
    assert rebuilt.size == 256
    other = ToyGenerator()
    other.w_avg.fill_(0.5)  # another prior: another fingerprint
    with pytest.raises(InputError, match="made by another prior"):
        PriorBank.open(rebuilt.path, other)


def test_the_bank_folder_is_bounded(toy, tmp_path, monkeypatch):
    G, _, _ = toy
    first = PriorBank.load_or_build(G, 256, folder=tmp_path)
    monkeypatch.setenv("BRGM_BANK_CACHE_BYTES", str(first.bytes + 10))
    second = PriorBank.load_or_build(G, 512, folder=tmp_path)
    assert second.path.is_file() and not first.path.exists()  # the least recently used went


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BRGM_CACHE_DIR", str(tmp_path))
    assert cache_folder() == tmp_path / "banks"
    monkeypatch.setenv("BRGM_BANK_SIZE", "zero")
    with pytest.raises(InputError, match="BRGM_BANK_SIZE must be a positive number"):
        bp.reconstruct(torch.rand(1, 1, 2, 2), Identity(), ToyGenerator(), perceptual=None, steps=1, progress=False)


def test_a_generator_without_a_mapping_network_gets_the_single_start_and_a_note(toy):
    G, y, params = toy

    class NoMapping(ToyGenerator):
        mapping = None

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec = bp.reconstruct(y, Identity(), NoMapping(), params=params, perceptual=None, steps=2, progress=False)
    assert rec.modes is None and "mapping network" in rec.notes[0]
