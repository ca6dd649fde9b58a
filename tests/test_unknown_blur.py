"""The unknown-blur model: its operator is the Gaussian Blur then f, differentiable in the width, and the width
of each image's blur is recovered by the MAP and by the posterior on a synthetic problem."""

import pytest
import torch
from conftest import tiny_generator

import brgm_pyro as bp
from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.forward import Blur, Compose, Downsample, Identity, Mask
from brgm_pyro.models import unknown_blur
from brgm_pyro.models.variants import get_model
from brgm_pyro.stylegan2 import to_unit

TRUE_WIDTHS = torch.tensor([0.6, 1.0, 1.5, 2.2])


@pytest.mark.parametrize("after", [Identity(), Downsample(2, "bicubic"), Mask.center_box(16, 6)],
                         ids=["identity", "downsample", "mask"])
def test_operator_is_the_gaussian_blur_then_f_per_image(after):
    f = unknown_blur.UnknownBlur(after, sigma=1.0, spread=0.3)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    reference = torch.cat([Compose(Blur.gaussian(float(s), size=f.size), after)(x[i : i + 1])
                           for i, s in enumerate(TRUE_WIDTHS)])
    assert torch.allclose(f.at(TRUE_WIDTHS)(x), reference, atol=1e-5)
    assert torch.allclose(f(x), Compose(Blur.gaussian(1.0, size=f.size), after)(x), atol=1e-5)
    assert torch.equal(f.observed((4, 1, 16, 16)), after.observed((4, 1, 16, 16)))


def test_the_blur_is_differentiable_in_its_width():
    f = unknown_blur.UnknownBlur(Identity(), sigma=1.0, size=9)
    x = torch.zeros(1, 1, 16, 16)
    x[..., 8, 8] = 1.0
    sigma = torch.tensor([1.2], requires_grad=True)
    peak = f.blur(x, sigma)[0, 0, 8, 8]
    peak.backward()
    assert sigma.grad < 0  # a wider blur lowers the peak of an impulse


def test_bad_arguments_get_one_sentence():
    with pytest.raises(InputError, match="sigma must be a positive"):
        unknown_blur.UnknownBlur(Identity(), sigma=0.0)
    with pytest.raises(InputError, match="size must be a positive odd"):
        unknown_blur.UnknownBlur(Identity(), sigma=1.0, size=4)
    with pytest.raises(InputTypeError, match="needs an operator"):
        unknown_blur.UnknownBlur(lambda x: x, sigma=1.0)
    with pytest.raises(InputError, match="more than an image of 8x8 allows"):
        unknown_blur.UnknownBlur(Identity(), sigma=2.0, size=19).output_shape((1, 1, 8, 8))


@pytest.fixture(scope="module")
def pinned_problem():
    """A tiny generator whose prior pins w near w_avg (w_std small), so the image is known and only the blur
    width explains y: four copies of G(w_avg), each blurred with its own width, then box-downsampled."""
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=512)
    G.w_std.fill_(0.02)
    x = to_unit(G.synthesis(G.w_avg.expand(4, G.num_ws, G.w_dim))).detach()
    f = unknown_blur.UnknownBlur(Downsample(2, "box"), sigma=1.0, spread=0.5)
    y = f.at(TRUE_WIDTHS)(x).clamp(0, 1)
    return G, f, y, bp.BRGMParams(sigma_pixel=0.01, kappa=0.0)


def test_the_map_recovers_each_blur_width(pinned_problem):
    G, f, y, params = pinned_problem
    rec = bp.reconstruct(y, f, G, params=params, perceptual=None, steps=60, lr=0.05,
                         model=get_model("unknown-blur"), progress=False)
    recovered = rec.latents["sigma_b"]
    assert recovered.shape == (4,)
    assert torch.allclose(recovered, TRUE_WIDTHS, rtol=0.1), recovered
    # f(G(w)) is taken at the inferred widths: it explains y to the noise level
    assert rec.data_consistency["rmse"].max() < 0.02
    assert rec.summary()["latents"]["sigma_b"] == pytest.approx(recovered.tolist())


def test_the_posterior_of_the_width_centres_on_the_truth(pinned_problem):
    G, f, y, params = pinned_problem
    rec = bp.reconstruct(y, f, G, params=params, perceptual=None, steps=60, lr=0.05,
                         model=unknown_blur.model, progress=False)
    post = bp.sample_posterior(y, f, G, "svi", model="unknown-blur", params=params, perceptual=None, map_result=rec,
                               steps=200, num_samples=8, progress=False)  # 40 steps do not converge
    draws = post.latents["sigma_b"]
    assert draws.shape == (8, 4) and (draws.std(0) > 0).all()
    assert torch.allclose(draws.mean(0), TRUE_WIDTHS, rtol=0.12), draws.mean(0)
    assert post.settings["sigma_reach"] is None  # no reach term without a known f
    with pytest.raises(InputError, match="needs f known"):
        bp.sample_posterior(y, f, G, "svi", model="unknown-blur", params=params, perceptual=None, map_result=rec,
                            sigma_reach=0.05, steps=2, num_samples=2, progress=False)


def test_the_model_refuses_a_plain_operator(pinned_problem):
    G, _, y, params = pinned_problem
    with pytest.raises(InputError, match="needs f = UnknownBlur"):
        bp.sample_posterior(y, Downsample(2, "box"), G, "svi", model="unknown-blur", params=params, perceptual=None,
                            sigma_reach=None, steps=2, num_samples=2, progress=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_map_starts_the_blur_width_at_its_prior_median(pinned_problem, seed):
    """Latents other than w start at their prior median (init_to_median), never at a random draw: with a
    vanishing learning rate the MAP returns the median sigma_0 for every seed."""
    G, f, y, params = pinned_problem
    rec = bp.reconstruct(y, f, G, params=params, perceptual=None, steps=1, lr=1e-12, model=unknown_blur.model,
                         seed=seed, progress=False)
    assert torch.allclose(rec.latents["sigma_b"], torch.full((4,), f.sigma), rtol=1e-6)
