"""The baselines that search a generator's latent space (pulse, projector) and BRGM in the baselines' convention
(brgm, brgm-mean): shapes, range, data consistency, the pieces of each recipe, and bad inputs."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_images, tiny_generator

from brgm_pyro import baselines
from brgm_pyro.baselines import noise_maps
from brgm_pyro.baselines.projector import noise_regularizer, projector
from brgm_pyro.baselines.pulse import EPS, _linear1cycledrop, gaussian_fit, geocross, pulse
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Downsample, Mask
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.reconstruct import reconstruct
from brgm_pyro.sampling import sample_posterior
from brgm_pyro.stylegan2 import to_unit


@pytest.fixture(scope="module")
def G():
    """A tiny generator whose noise inputs matter: a fresh one's noise strengths are 0, a trained one's are not."""
    generator = tiny_generator(16).requires_grad_(False)
    generator.compute_w_stats(num_samples=512)
    for layer in noise_maps.noise_layers(generator):
        layer.noise_strength.fill_(0.2)
    return generator


@pytest.fixture(scope="module")
def superres(G):
    x = sample_images(G, 3, seed=3)
    f = Downsample(4, "bicubic")
    return x, f, f(x).clamp(0, 1)


def _consistency(images, f, y):
    return (f(images) - y).square().flatten(1).mean(1).sqrt()


def _start_consistency(G, f, y):
    start = to_unit(G.synthesis(G.w_avg.expand(y.shape[0], G.num_ws, G.w_dim)), clamp=True)
    return _consistency(start, f, y)


def test_noise_maps_are_swapped_in_and_restored(G):
    layers = noise_maps.noise_layers(G)
    assert [layer.resolution for layer in layers] == [4, 8, 8, 16, 16]
    own = [layer.noise_const.clone() for layer in layers]
    maps = noise_maps.random_noise(G, 2, torch.Generator().manual_seed(0))
    w = G.w_avg.expand(2, G.num_ws, G.w_dim)
    with noise_maps.using_noise(G, maps):
        swapped = G.synthesis(w)
    assert not torch.allclose(swapped, G.synthesis(w))
    with pytest.raises(RuntimeError), noise_maps.using_noise(G, maps):
        raise RuntimeError("inside")
    assert all(torch.equal(layer.noise_const, noise) for layer, noise in zip(layers, own))
    with pytest.raises(InputError, match="one map per layer"), noise_maps.using_noise(G, maps[:2]):
        pass


def test_pulse_reconstructs_within_its_epsilon_and_reports_the_check(G, superres):
    x, f, y = superres
    details = {}
    images = baselines.get("pulse")(y, f, G, fit_samples=5000, details=details)
    assert images.shape == x.shape and images.min() >= 0 and images.max() <= 1
    assert details["eps"] == EPS and details["passed"].shape == (3,)
    assert torch.equal(details["passed"], details["min_mse"] <= EPS)
    assert (_consistency(images, f, y) < _start_consistency(G, f, y)).all()
    assert (_consistency(images, f, y) ** 2 < 2 * EPS).all()


def test_pulse_pieces():
    # the schedule: a triangle from 0.1 to 1 and back over 90% of the steps, then down to 1/1000
    assert [round(_linear1cycledrop(s, 100), 4) for s in (0, 45, 90)] == [0.1, 1.0, 0.1]
    assert _linear1cycledrop(100, 100) == pytest.approx(1e-3)
    # GEOCROSS is zero for equal vectors and the squared angle for orthogonal ones of one norm
    w = torch.randn(1, 1, 8).expand(1, 3, 8)
    assert float(geocross(w)) == pytest.approx(0.0, abs=1e-3)
    pair = torch.eye(2)[None] * 3.0
    assert float(geocross(pair)) == pytest.approx(2 / 8 * (math.pi / 2) ** 2 * 2 / 4, rel=1e-4)


def test_pulse_gaussian_fit_undoes_the_last_leaky_relu(G):
    mean, std = gaussian_fit(G, samples=4096, seed=1)
    w = G.mapping(torch.randn(4096, G.z_dim, generator=torch.Generator().manual_seed(1)))[:, 0]
    v = F.leaky_relu(w, 5.0)
    assert torch.allclose(mean, v.mean(0), atol=1e-4) and torch.allclose(std, v.std(0), rtol=1e-3)
    assert torch.allclose(F.leaky_relu(v, 0.2), w, atol=1e-5)


def test_pulse_refuses_masks_and_a_missing_generator(G):
    y = torch.rand(1, 1, 16, 16)
    with pytest.raises(InputError, match="super-resolution method"):
        pulse(y, Mask.center_box(16, 4), G, fit_samples=1000)
    with pytest.raises(InputError, match="pass G"):
        pulse(y, Downsample(4), None)


def test_noise_regularizer_tells_white_noise_from_correlated_maps():
    white = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    smooth = F.interpolate(torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)), size=16,
                           mode="bilinear")
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert (noise_regularizer([white]) < 0.05).all()
    assert (noise_regularizer([smooth]) > 10 * noise_regularizer([white])).all()


@pytest.mark.parametrize("options", [
    {},
    {"optimise_noise": False, "w_plus": True},
    {"optimise_noise": False, "w_plus": True, "pixel": True, "prior": True, "colinear": True},
], ids=["projector", "w-plus", "brgm-terms"])
def test_projector_and_its_ablation_steps_move_towards_y(G, superres, options):
    x, f, y = superres
    images = baselines.get("projector")(y, f, G, perceptual="fmnist", steps=40, **options)
    assert images.shape == x.shape and images.min() >= 0 and images.max() <= 1
    assert (_consistency(images, f, y) < _start_consistency(G, f, y)).all()


def test_projector_keeps_G_and_needs_a_feature_network(G, superres):
    _, f, y = superres
    own = [layer.noise_const.clone() for layer in noise_maps.noise_layers(G)]
    projector(y, f, G, perceptual="fmnist", steps=3)
    assert all(torch.equal(layer.noise_const, noise) for layer, noise in zip(noise_maps.noise_layers(G), own))
    with pytest.raises(InputError, match="loss is perceptual"):
        projector(y, f, G, steps=3)


def test_brgm_methods_are_bp_reconstruct_and_the_posterior_mean(G, superres):
    x, f, y = superres
    details = {}
    images = baselines.get("brgm")(y, f, G, steps=20, details=details)
    assert torch.equal(images, reconstruct(y, f, G, steps=20, progress=False).image)
    assert details["neg_log_total"].shape == (3,)
    details = {}
    mean = baselines.get("brgm-mean")(y, f, G, map_schedule=MAPSchedule(steps=5), num_samples=4, details=details)
    assert mean.shape == x.shape and mean.min() >= 0 and mean.max() <= 1
    post = sample_posterior(y, f, G, map_schedule=MAPSchedule(steps=5), num_samples=4, progress=False)
    assert torch.equal(mean, post.mean) and details["method"] == "laplace"  # the default posterior's mean
    details = {}
    baselines.get("brgm-mean")(y, f, G, "svi", map_schedule=MAPSchedule(steps=5), steps=5, num_samples=4, details=details)
    # SVI fits a guide per image and mode: the laplace guide of one image
    assert details["method"] == "svi" and details["guide"] == "laplace" and details["model"] == "learned-noise"
    with pytest.raises(InputError, match="pass G"):
        baselines.get("brgm")(y, f, None)


def test_the_registry_says_which_tasks_a_method_is_for():
    assert baselines.tasks("pulse") == ("superres",)
    assert set(baselines.tasks("brgm")) == {"superres", "inpaint"}
    with pytest.raises(InputError, match="Unknown baseline"):
        baselines.tasks("nearest")


def test_brgm_can_keep_the_observed_pixels_of_an_inpainting_input(G):
    f = Mask(torch.stack([Mask.half(16, "left").mask, Mask.center_box(16, 8).mask])[:, None])
    y = f(sample_images(G, 2, seed=5))
    plain = baselines.get("brgm")(y, f, G, steps=5, perceptual=None)
    kept = baselines.get("brgm")(y, f, G, steps=5, perceptual=None, keep_observed=True)
    observed = f.mask.bool()
    assert torch.equal(kept[observed], y[observed]) and torch.equal(kept[~observed], plain[~observed])
    assert not torch.equal(plain[observed], y[observed])
    with pytest.raises(InputError, match="keep_observed needs an f that keeps the image size"):
        baselines.get("brgm")(Downsample(4, "box")(y), Downsample(4, "box"), G, steps=1, perceptual=None,
                              keep_observed=True)
