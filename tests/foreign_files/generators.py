"""Tiny random generators whose weights the foreign files carry."""

from __future__ import annotations

import copy

import torch

from brgm_pyro.stylegan2 import StyleGAN2Generator

TINY = {
    "resolution": 16,
    "z_dim": 16,
    "w_dim": 16,
    "mapping_layers": 2,
    "channel_base": 256,
    "channel_max": 32,
}


def random_generator(channels: int = 3, conv_clamp: float | None = None, seed: int = 1) -> StyleGAN2Generator:
    """A tiny generator whose every parameter and buffer is random (none left at its init value)."""
    G = StyleGAN2Generator(channels=channels, conv_clamp=conv_clamp, seed=0, compute_stats=False, **TINY)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in G.state_dict().items():
            if name not in ("w_avg", "w_std"):
                tensor.add_(0.3 * torch.randn(tensor.shape, generator=gen))
    G.compute_w_stats()
    return G.eval()


def perturbed(G: StyleGAN2Generator) -> StyleGAN2Generator:
    """A copy of G with other weights: the training copy that snapshots store next to the average."""
    H = copy.deepcopy(G)
    with torch.no_grad():
        for name, tensor in H.state_dict().items():
            if name not in ("w_avg", "w_std"):
                tensor.add_(torch.randn(tensor.shape, generator=torch.Generator().manual_seed(7)))
    return H


def assert_same_generator(G: StyleGAN2Generator, H: StyleGAN2Generator) -> None:
    """H computes what G computes (mapping, synthesis with fixed noise), with the same config and statistics."""
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(3, G.z_dim, generator=gen)
    ws = G.w_avg + G.w_std * torch.randn(3, G.num_ws, G.w_dim, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(H.mapping(z), G.mapping(z), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            H.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"), atol=1e-5, rtol=1e-5
        )
    assert H.config == G.config
    torch.testing.assert_close(H.w_avg, G.w_avg, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(H.w_std, G.w_std, atol=1e-5, rtol=1e-5)
