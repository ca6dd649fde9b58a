import os
import socket

import pytest
import torch
import torch.nn.functional as F

from brgm_pyro import perceptual
from brgm_pyro.perceptual import (
    LPIPSVGG,
    VGG16_FILENAME,
    VGG16_URL,
    FeatureNetwork,
    MissingWeightsError,
    get_perceptual,
    register_perceptual,
)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return LPIPSVGG(pretrained_backbone=False)


def squared_distance(net, a, b):
    return (net(a) - net(b)).square().sum(1)


def test_features_reproduce_the_lpips_distance(net):
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 64, 64, generator=generator)
    b = (a + 0.2 * torch.randn(2, 3, 64, 64, generator=generator)).clamp(0, 1)
    features_a, features_b = net(a), net(b)
    assert features_a.shape == (2, 64 * 64**2 + 128 * 32**2 + 256 * 16**2 + 512 * 8**2 + 512 * 4**2)
    reference = net.lpips(a, b, normalize=True).flatten()
    torch.testing.assert_close((features_a - features_b).square().sum(1), reference, rtol=1e-4, atol=1e-7)


def test_network_is_frozen_and_gradients_reach_the_input(net):
    assert not any(parameter.requires_grad for parameter in net.parameters())
    net.train()
    assert not net.training and not net.lpips.lin0.training
    images = torch.rand(1, 3, 32, 32, requires_grad=True)
    squared_distance(net, images, torch.rand(1, 3, 32, 32)).sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_grayscale_is_repeated_to_rgb(net):
    gray = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(net(gray), net(gray.repeat(1, 3, 1, 1)))


def test_large_inputs_are_area_resized_keeping_the_aspect_ratio(net):
    images = torch.rand(1, 3, 200, 400)
    expected = F.interpolate(images, size=(128, 256), mode="area")
    torch.testing.assert_close(net.preprocess(images), expected)


@pytest.mark.parametrize("size, factor", [(8, 8), (20, 4), (64, 1)])
def test_small_inputs_are_enlarged_by_pixel_replication(net, size, factor):
    images = torch.rand(2, 1, size, size)
    replicated = images.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
    torch.testing.assert_close(net.preprocess(images), replicated.expand(-1, 3, -1, -1))


def test_tiny_inputs_give_a_finite_positive_distance(net):
    distance = squared_distance(net, torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    assert torch.isfinite(distance).all() and (distance > 0).all()


def test_zero_activations_keep_gradients_finite():
    activations = torch.zeros(1, 4, 3, 3, requires_grad=True)
    perceptual._unit_normalize(activations).sum().backward()
    assert torch.isfinite(activations.grad).all()


@pytest.mark.parametrize("images", [torch.rand(3, 32, 32), torch.rand(1, 2, 32, 32)])
def test_bad_shapes_raise_a_clear_error(net, images):
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) with C = 1 or 3"):
        net(images)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="min_size"):
        LPIPSVGG(pretrained_backbone=False, min_size=8)


@pytest.fixture
def offline_empty_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return tmp_path


def test_missing_weights_offline_say_what_to_download_and_where(offline_empty_hub):
    expected_path = str(offline_empty_hub / "checkpoints" / VGG16_FILENAME)
    with pytest.raises(MissingWeightsError) as raised:
        LPIPSVGG()
    message = str(raised.value)
    assert VGG16_FILENAME in message and VGG16_URL in message and expected_path in message
    assert not os.path.exists(expected_path)
    with pytest.raises(MissingWeightsError):
        get_perceptual("LPIPS-VGG")


def test_present_weights_are_used_without_network(offline_empty_hub, monkeypatch):
    path = perceptual.vgg16_weights_path()
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download although the file is present")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    assert perceptual._ensure_vgg16_weights() == path


class Pixels(FeatureNetwork):
    def __init__(self):
        super().__init__()
        self.freeze()

    def forward(self, images):
        return images.flatten(1)


def test_get_perceptual_resolves_none_names_and_modules(net):
    assert get_perceptual(None) is None
    assert get_perceptual("none") is None and get_perceptual("None") is None
    assert get_perceptual(net) is net
    assert "lpips-vgg" in perceptual.available_perceptual()
    with pytest.raises(ValueError, match=r"unknown perceptual network 'vgg'.*none, .*lpips-vgg"):
        get_perceptual("vgg")
    with pytest.raises(TypeError, match=r"subclass brgm_pyro\.perceptual\.FeatureNetwork"):
        get_perceptual(torch.nn.Identity())
    with pytest.raises(TypeError):
        FeatureNetwork()


def test_register_perceptual(monkeypatch):
    monkeypatch.setattr(perceptual, "_REGISTRY", dict(perceptual._REGISTRY))
    register_perceptual("pixels", Pixels)
    network = get_perceptual("pixels")
    assert isinstance(network, Pixels)
    images = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(network(images), images.reshape(2, 16))
    with pytest.raises(ValueError, match="already registered"):
        register_perceptual("Pixels", Pixels)
    register_perceptual("pixels", Pixels, overwrite=True)
    with pytest.raises(ValueError, match="reserved"):
        register_perceptual("none", Pixels)
    register_perceptual("broken", torch.nn.Identity)
    with pytest.raises(TypeError, match="not a FeatureNetwork"):
        get_perceptual("broken")
