import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from brgm_pyro.fmnist import (
    FEATURES_DIR,
    FMNISTEval,
    FMNISTPercept,
    class_fidelity,
    class_histogram,
    feature_net_path,
    fid,
    frechet_distance,
    frechet_distance_gaussians,
    networks,
    percept,
    resize_to_input,
)
from brgm_pyro.fmnist import evaluator as evaluator_module
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.forward import Blur
from brgm_pyro.perceptual import FeatureNetwork, get_perceptual


@pytest.fixture(scope="module")
def test_images(fashion_mnist_dir):
    images, labels = load_fashion_mnist("test", root=fashion_mnist_dir)
    return images[:1000], labels[:1000]


@pytest.fixture(scope="module")
def phi():
    return FMNISTPercept()


@pytest.fixture(scope="module")
def evaluator():
    return FMNISTEval()


@pytest.mark.parametrize("kind", ["percept", "eval"])
def test_shipped_weights_are_small_and_carded(kind):
    path = feature_net_path(kind)
    assert path.stat().st_size < 2_000_000
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["test_accuracy"] >= 0.90 and card["val_accuracy"] >= 0.90


def test_both_networks_classify_the_test_images(phi, evaluator, test_images):
    images, labels = test_images
    with torch.no_grad():
        percept_accuracy = (phi.net(images).argmax(1) == labels).float().mean()
        eval_accuracy = (evaluator.predict(images) == labels).float().mean()
    assert percept_accuracy >= 0.88 and eval_accuracy >= 0.88


def test_the_two_networks_differ(phi, evaluator):
    assert type(phi.net) is not type(evaluator.net)
    assert evaluator.features(torch.rand(3, 1, 32, 32)).shape == (3, 128)


@pytest.mark.parametrize("size", [4, 8, 32, 64])
def test_phi_takes_any_size_with_finite_features_and_input_gradients(phi, size):
    assert isinstance(phi, FeatureNetwork)
    images = torch.rand(2, 1, size, size, requires_grad=True)
    features = phi(images)
    assert features.shape == (2, 16 * 32**2 + 32 * 16**2 + 64 * 8**2 + 128 * 4**2)
    assert torch.isfinite(features).all()
    (features - phi(torch.rand(2, 1, size, size))).square().sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in phi.parameters())


def test_low_resolution_images_are_seen_as_their_pixel_replication(phi):
    small = torch.rand(2, 1, 8, 8)
    replicated = small.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    torch.testing.assert_close(phi(small), phi(replicated))


@pytest.mark.parametrize("size", [(8, 8), (16, 4), (7, 9), (1, 2), (32, 32)])
def test_resizing_replicates_pixels_as_nearest_exact_interpolation(size):
    small = torch.rand(2, 1, *size)
    expected = torch.nn.functional.interpolate(small, size=(32, 32), mode="nearest-exact")
    torch.testing.assert_close(resize_to_input(small), expected, rtol=0, atol=0)


def test_evaluator_stays_frozen_inside_a_training_module(evaluator, test_images):
    images = test_images[0][:8]
    before = evaluator.logits(images)
    parent = torch.nn.Sequential(evaluator).train()
    assert not evaluator.training and not evaluator.net.training
    torch.testing.assert_close(parent[0].logits(images), before)


@pytest.mark.parametrize("network", ["phi", "evaluator"])
def test_distance_is_zero_for_equal_images_and_grows_with_corruption(network, phi, evaluator, test_images):
    if network == "phi":

        def distance(a, b):
            return (phi(a) - phi(b)).square().sum(1)
    else:
        distance = evaluator.distance
    images = test_images[0][:16]
    with torch.no_grad():
        assert distance(images, images).abs().max() == 0
        blurred = [distance(images, Blur.gaussian(sigma)(images)).mean() for sigma in (0.5, 1.0, 2.0, 3.0)]
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
        noisy = [distance(images, images + level * noise).mean() for level in (0.02, 0.05, 0.1, 0.2, 0.4)]
    for sequence in (blurred, noisy):
        values = torch.stack(sequence)
        assert (values.diff() > 0).all(), values
        assert 0 < values[-1] <= 4


def test_get_perceptual_finds_the_fmnist_network():
    assert isinstance(get_perceptual("fmnist"), FMNISTPercept)
    assert isinstance(get_perceptual("FMNIST"), FMNISTPercept)


def test_the_package_names_its_parts():
    assert (evaluator_module.FMNISTEval, percept.FMNISTPercept) == (FMNISTEval, FMNISTPercept)
    assert (evaluator_module.fid, evaluator_module.class_histogram, networks.resize_to_input) == (fid, class_histogram, resize_to_input)
    assert feature_net_path("eval").parent == FEATURES_DIR == networks.FEATURES_DIR
    assert FEATURES_DIR.is_dir() and FEATURES_DIR.name == "features"


def test_the_name_fmnist_works_without_importing_the_module_first():
    code = "from brgm_pyro.perceptual import get_perceptual; print(type(get_perceptual('fmnist')).__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FMNISTPercept"


def _reference_frechet(mu1, sigma1, mu2, sigma2):
    # The textbook form, with scipy's square root of the non-symmetric product.
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * root.real)


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet_distance_gaussians([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # Commuting (diagonal) covariances: sum (sqrt(a_i) - sqrt(b_i))^2.
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance_gaussians(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    # General covariances.
    m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    sigma1, sigma2 = m1 @ m1.T + 0.1 * np.eye(6), m2 @ m2.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = _reference_frechet(mu1, sigma1, mu2, sigma2)
    assert frechet_distance_gaussians(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_samples():
    rng = np.random.default_rng(1)
    root = rng.normal(size=(8, 8)) / 3
    sigma = root @ root.T + 0.5 * np.eye(8)
    shift = np.full(8, 0.5)

    def draw(mean):
        return rng.multivariate_normal(mean, sigma, size=20_000)

    same = frechet_distance(draw(np.zeros(8)), torch.from_numpy(draw(np.zeros(8))))
    shifted = frechet_distance(draw(np.zeros(8)), draw(shift))
    assert shifted == pytest.approx(8 * 0.25, rel=0.1)
    assert 0 <= same < 0.02 * shifted
    # A dead feature and fewer samples than features make the covariances singular: still exact.
    few = draw(np.zeros(8))[:5]
    few[:, 0] = 0
    assert frechet_distance(few, few) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 8)), np.zeros((5, 8)))


def test_class_metrics_on_true_images(evaluator, test_images):
    images, labels = test_images
    kept = class_fidelity(images[:500], labels[:500])  # the default, shipped evaluator
    assert kept.dtype == torch.bool and kept.shape == (500,)
    assert kept.float().mean() >= 0.88
    counts = class_histogram(images[:500], net=evaluator)
    assert counts.shape == (10,) and counts.sum() == 500
    assert (counts - torch.bincount(labels[:500], minlength=10)).abs().max() <= 20
    with pytest.raises(ValueError, match="one label per image"):
        class_fidelity(images[:5], labels[:4], net=evaluator)


def test_fid_separates_the_test_images_from_blurred_ones(evaluator, test_images):
    images = test_images[0]
    same = fid(images[:500], images[500:], net=evaluator)
    blurred = fid(images[:500], Blur.gaussian(1.5)(images[500:]), net=evaluator)
    assert 0 <= same < 0.25 * blurred


def test_missing_or_foreign_weights_are_refused_in_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_feature_nets.py"):
        FMNISTPercept(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="not a Fashion-MNIST 'percept' network"):
        FMNISTPercept(feature_net_path("eval"))
    with pytest.raises(ValueError, match=r"grayscale images of shape \(B, 1, H, W\)"):
        resize_to_input(torch.rand(2, 3, 32, 32))
