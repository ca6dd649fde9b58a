"""The generator's noise inputs as per-image maps that an inversion may optimise (PULSE, the StyleGAN2 projector).

Each synthesis layer of StyleGAN2 adds ``noise_strength * n`` to its output, n one R x R map per
layer; ``bp.reconstruct`` keeps n fixed (G's buffers ``noise_const``). PULSE and NVIDIA's projector
optimise the maps too, one set per image. :func:`noise_layers` lists the layers that take noise,
coarse to fine (at 32 px: 4, 8, 8, 16, 16, 32, 32), and :func:`using_noise` runs G with maps of
one's own, (B, 1, R, R) per layer, in place of its buffers, which it restores on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from brgm_pyro.errors import InputError

__all__ = ["noise_layers", "random_noise", "using_noise"]


def noise_layers(G: nn.Module) -> list[nn.Module]:
    """The synthesis layers of G that add a noise map, in the order they run (coarse to fine)."""
    layers = []
    for resolution in G.synthesis.block_resolutions:
        block = getattr(G.synthesis, f"b{resolution}")
        layers.extend(layer for layer in (getattr(block, "conv0", None), block.conv1) if layer is not None)
    return layers


def random_noise(G: nn.Module, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Standard normal maps (batch, 1, R, R), one per noise layer of G, drawn with ``generator`` (on G's device)."""
    device = G.w_avg.device
    return [torch.randn(batch, 1, layer.resolution, layer.resolution, generator=generator).to(device)
            for layer in noise_layers(G)]


@contextlib.contextmanager
def using_noise(G: nn.Module, maps: Sequence[torch.Tensor]) -> Iterator[None]:
    """Run G with ``maps`` (one (B, 1, R, R) tensor per noise layer, see :func:`noise_layers`) as its
    noise inputs; G's own noise buffers are put back on exit, whatever happens inside."""
    layers = noise_layers(G)
    if len(maps) != len(layers):
        raise InputError(f"G has {len(layers)} noise layers, got {len(maps)} noise maps; pass one map per layer.")
    own = [layer.noise_const for layer in layers]
    try:
        for layer, noise in zip(layers, maps):
            layer.noise_const = noise  # a buffer: the layer adds noise_const * noise_strength
        yield
    finally:
        for layer, noise in zip(layers, own):
            layer.noise_const = noise
