import pytest
import torch

from brgm_pyro.stylegan2 import StyleGAN2Generator, to_unit


def tiny_generator(resolution: int = 16, channels: int = 1, seed: int = 0, **kwargs) -> StyleGAN2Generator:
    """A small random generator (a few thousand parameters) for fast tests."""
    config = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
    config.update(kwargs)
    return StyleGAN2Generator(resolution=resolution, channels=channels, seed=seed, **config).eval()


def sample_images(G: StyleGAN2Generator, num: int, seed: int = 1) -> torch.Tensor:
    """Images G(w) in [0, 1] for w from the mapping of z drawn with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return to_unit(G.synthesis(G.mapping(torch.randn(num, G.z_dim, generator=gen))), clamp=True)


@pytest.fixture(scope="session", autouse=True)
def _threads():
    # The tests use tiny networks: one thread avoids thread start-up costs that dominate them.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
