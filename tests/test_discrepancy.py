"""The prior-reach term: Matheron draws of r | y, w against the exact Gaussian conditional, and its
use in ``sample_posterior``."""

from __future__ import annotations

import pytest
import torch
from conftest import sample_images, tiny_generator
from torch import nn

import brgm_pyro as bp
from brgm_pyro import forward as fw
from brgm_pyro.sampling import sample_posterior
from brgm_pyro.uncertainty.discrepancy import check_linear, sample_reach_residual


def _dense(f: fw.Operator, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of x -> f(x) * observed, (m, n), column by column."""
    n = torch.Size(shape).numel()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape[1:])
    observed = f.observed(shape, dtype=torch.float64)
    return (f(basis) * observed).reshape(n, -1).T


@pytest.mark.parametrize(
    "f",
    [fw.Downsample(2, "bicubic"), fw.Mask.center_box(6, 2), fw.Compose(fw.Blur.gaussian(1.0), fw.Mask.half(6, "left"))],
    ids=["downsample", "mask", "blur-then-mask"],
)
def test_draws_follow_the_exact_gaussian_conditional(f):
    shape = (1, 1, 6, 6)
    sigma_reach, sigma_pixel = 0.1, 0.02
    F = _dense(f, shape)
    out_shape = f.output_shape(shape)
    observed = f.observed(shape, dtype=torch.float64).expand(out_shape)
    residual = 0.1 * torch.randn(out_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * observed
    A = sigma_reach**2 * F @ F.T + sigma_pixel**2 * torch.eye(F.shape[0], dtype=torch.float64)
    mean = sigma_reach**2 * F.T @ torch.linalg.solve(A, residual.flatten())
    cov = sigma_reach**2 * torch.eye(F.shape[1], dtype=torch.float64) - sigma_reach**4 * F.T @ torch.linalg.solve(A, F)

    draws = 20_000
    r = sample_reach_residual(
        residual.expand(draws, *out_shape[1:]).contiguous(), f.tile(draws), sigma_reach, sigma_pixel,
        generator=torch.Generator().manual_seed(1),
    ).reshape(draws, -1)
    # Monte Carlo error of a mean is sd / sqrt(draws) <= 0.1 / 141; of a covariance about var * sqrt(2 / draws).
    assert (r.mean(0) - mean).abs().max() < 5 * sigma_reach / draws**0.5
    assert (torch.cov(r.T) - cov).abs().max() < 5 * sigma_reach**2 * (2 / draws) ** 0.5
    # What f observes is pinned: each observed value F r varies by less than the noise sigma_pixel.
    seen = F.abs().sum(1) > 0
    assert ((F @ cov @ F.T).diagonal()[seen] < sigma_pixel**2).all()


def test_a_noiseless_observation_is_reproduced():
    """With sigma_pixel -> 0 and f = identity, r = y - G(w) exactly."""
    f = fw.Identity()
    residual = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    r = sample_reach_residual(residual, f, 0.5, 1e-6)
    assert torch.allclose(r, residual, atol=1e-4)


class Square(nn.Module):
    def forward(self, x):
        return x.square()


class SquareOperator(fw.Identity):
    def forward(self, x):
        return x.square()


def test_nonlinear_operators_are_refused():
    check_linear(fw.Downsample(2), (1, 1, 8, 8))
    with pytest.raises(ValueError, match="needs a linear corruption f with its structure .* Square is not one"):
        check_linear(Square(), (1, 1, 8, 8))
    with pytest.raises(ValueError, match="needs a linear corruption f, and SquareOperator is not linear"):
        check_linear(SquareOperator(), (1, 1, 8, 8))


@pytest.fixture(scope="module")
def G16():
    return tiny_generator(16).requires_grad_(False)


def test_sample_posterior_adds_the_reach_residual(G16):
    f = fw.Mask.center_box(16, 8)
    x = sample_images(G16, 1, seed=4)
    y = f(x)
    # learned-noise in both, so that sigma_reach changes only the predictive, not the posterior of w.
    common = dict(model="learned-noise", perceptual=None, map_schedule=bp.MAPSchedule(steps=10), steps=10,
                  progress=False, seed=0)
    off = sample_posterior(y, f, G16, "svi", 16, sigma_reach=None, **common)
    on = sample_posterior(y, f, G16, "svi", 16, sigma_reach=0.2, **common)
    assert off.sigma_reach is None and off.generator_samples is off.samples
    assert on.sigma_reach == 0.2 and on.settings["sigma_reach"] == 0.2
    # Same draws of w, so the same G(w); the predictive adds r on top.
    assert torch.allclose(on.generator_samples, off.generator_samples, atol=1e-5)
    hole = (f.observed(x.shape).expand_as(x) == 0)[0]
    std = on.std[0]
    # In the hole r is nearly its prior, std about sigma_reach (less where clamping to [0, 1] bites);
    # on observed pixels each draw stays within a few of its own sigma_pixel (learned-noise) of y.
    assert std[hole].mean() > 0.1 > std[~hole].mean()
    deviation = (on.samples[:, 0][:, ~hole] - y[0][~hole]).abs().amax(dim=1)
    assert (deviation < 6 * on.latents["sigma_pixel"].flatten()).all()
    assert on.samples.min() >= 0 and on.samples.max() <= 1


@pytest.mark.parametrize("value", [-0.1, "big", float("inf"), True])
def test_bad_sigma_reach_gets_a_clear_error(G16, value):
    f = fw.Mask.center_box(16, 8)
    y = f(sample_images(G16, 1, seed=4))
    with pytest.raises(ValueError, match="sigma_reach must be 'auto', None, 0 or a positive number"):
        sample_posterior(y, f, G16, "svi", 2, sigma_reach=value, perceptual=None,
                         map_schedule=bp.MAPSchedule(steps=1), steps=1, progress=False)


def test_nonlinear_f_with_the_reach_term_is_refused(G16):
    class Clip(fw.Identity):
        def forward(self, x):
            return x.clamp(0.2, 0.8)

    y = sample_images(G16, 1, seed=4)
    with pytest.raises(ValueError, match="not linear"):
        sample_posterior(y, Clip(), G16, "svi", 2, sigma_reach=0.1, perceptual=None,
                         map_schedule=bp.MAPSchedule(steps=1), steps=1, progress=False)


def test_the_reach_term_takes_one_mask_per_image(G16):
    # The linearity check and the residual's draws run on each image with its own mask.
    f = fw.Mask(torch.stack([fw.Mask.half(16, "left").mask, fw.Mask.center_box(16, 8).mask])[:, None])
    y = f(sample_images(G16, 2, seed=4))
    post = sample_posterior(y, f, G16, "svi", 16, sigma_reach=0.2, perceptual=None,
                            map_schedule=bp.MAPSchedule(steps=10), steps=10, progress=False, seed=0)
    assert post.samples.shape == (16, 2, 1, 16, 16)
    for image in range(2):
        hole = f.mask[image, 0] == 0
        std = post.std[image, 0]
        assert std[hole].mean() > 0.1 > std[~hole].mean()


@pytest.mark.parametrize(
    "f", [fw.Downsample(2, "bicubic"), fw.Downsample(3, "box"), fw.Mask.center_box(6, 2), fw.Identity()],
    ids=["downsample-bicubic", "downsample-box", "mask", "identity"],
)
def test_reach_log_likelihood_is_the_gaussian_of_y_with_r_integrated_out(f):
    """log N(y - f(G(w)); 0, sigma_reach^2 F F^T + sigma_pixel^2 I) over the observed pixels, against
    the dense multivariate normal, per image with its own sigma_pixel."""
    from brgm_pyro.uncertainty.discrepancy import reach_log_likelihood

    shape = (1, 1, 6, 6)
    F = _dense(f, shape)
    seen = F.abs().sum(1) > 0
    out_shape = f.output_shape((2, 1, 6, 6))
    observed = f.observed(shape, dtype=torch.float64)
    residual = 0.1 * torch.randn(out_shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    residual = residual * observed
    sigma_pixel = torch.tensor([0.01, 0.05], dtype=torch.float64)
    value = reach_log_likelihood(residual, f, sigma_pixel, 0.08)
    for b in range(2):
        cov = 0.08**2 * F[seen] @ F[seen].T + sigma_pixel[b] ** 2 * torch.eye(int(seen.sum()), dtype=torch.float64)
        exact = torch.distributions.MultivariateNormal(torch.zeros(len(cov), dtype=torch.float64), cov)
        assert float(value[b]) == pytest.approx(float(exact.log_prob(residual[b].flatten()[seen])), rel=1e-9)


def test_reach_model_needs_the_cards_sigma_reach_and_widens_the_posterior_of_w(monkeypatch):
    """The 'reach' model on a tiny generator: without sigma_reach it says so in one sentence; with it,
    the posterior of w is wider than learned-noise's from the same MAP (the data pin w less)."""
    from brgm_pyro.models import reach

    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    x = sample_images(G, 1, seed=5)
    f = fw.Mask.center_box(16, 6)
    y = f(x)
    with pytest.raises(ValueError, match=r"^model='reach' needs the prior's reach \(params.sigma_reach > 0\)"):
        sample_posterior(y, f, G, "svi", 4, model="reach", perceptual=None, steps=2, progress=False, sigma_reach=None,
                         map_schedule=bp.MAPSchedule(steps=2))
    G.card = {"sigma_reach": 0.1}
    # reconstruct takes the reach from its params (sample_posterior sets them from the card).
    rec = bp.reconstruct(y, f, G, params=bp.BRGMParams(sigma_reach=0.1), perceptual=None, steps=30, progress=False,
                         model=reach.model)
    spread = {}
    for name in ("learned-noise", "reach"):
        post = sample_posterior(y, f, G, "svi", 32, model=name, perceptual=None, map_result=rec, steps=60,
                                progress=False)
        spread[name] = float(post.generator_samples.std(0).mean())
    assert spread["reach"] > 1.2 * spread["learned-noise"]
