"""The supervised networks: a residual super-resolution CNN and a residual U-Net for inpainting.

Both predict a correction to a simple reconstruction, so they start from a sensible image:

- :class:`SuperResolutionNet` (our stand-in for SRFBN/ESRGAN): x = bicubic(y) + r(y), where r is an
  EDSR-style residual CNN working at the input's low resolution (residual blocks with a long skip)
  followed by one sub-pixel (PixelShuffle) x2 stage per octave, each refined by a residual block at
  its resolution. Working at the low resolution keeps training affordable on a CPU while the
  receptive field covers the whole 4x4, 8x8 or 16x16 input.
- :class:`InpaintingNet` (our stand-in for SN-PatchGAN): a U-Net on (y * m, m) whose coarsest level
  (4x4 at 32 px) sees the whole image, so a missing half can be filled from the other half; the
  output is composited, x = m * y + (1 - m) * net, so observed pixels are kept exactly.

Images are (B, C, H, W) in [0, 1]; the outputs are clamped to [0, 1], except with ``clamp=False``,
which training uses: a clamped output passes no gradient where it is clipped, and a network whose
fill drifts below 0 everywhere would never recover. The last conv starts at zero, so an untrained
network returns the simple reconstruction. Each network's constructor arguments are its ``config``
(a dict of ints), stored in the weight file's header.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from brgm_pyro.baselines.bicubic import bicubic_upsample

__all__ = ["InpaintingNet", "ResidualBlock", "SuperResolutionNet"]


def _conv(channels_in: int, channels_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1)


def _zero_conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    conv = _conv(channels_in, channels_out)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ResidualBlock(nn.Module):
    """h + conv(relu(conv(h))), the EDSR block (no batch normalisation)."""

    def __init__(self, features: int):
        super().__init__()
        self.body = nn.Sequential(_conv(features, features), nn.ReLU(inplace=True), _conv(features, features))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


class SuperResolutionNet(nn.Module):
    """x = clamp(bicubic(y) + r(y), 0, 1) for y (B, C, H / factor, W / factor) -> x (B, C, H, W).

    r: a 3x3 head to ``features`` maps, ``blocks`` residual blocks and a 3x3 conv with a skip around
    them (all at the low resolution), then per octave of ``factor`` a conv to 4x the next stage's maps,
    PixelShuffle(2), ReLU and a residual block; the stages halve the maps down to ``min_features``.
    A last 3x3 conv gives the residual image.

    Args:
        factor: the upsampling factor, a power of two.
        features: feature maps at the low resolution.
        blocks: residual blocks at the low resolution.
        min_features: feature maps of the finest stages.
        channels: image channels.
    """

    def __init__(self, factor: int, features: int = 64, blocks: int = 8, min_features: int = 32, channels: int = 1):
        super().__init__()
        octaves = round(math.log2(factor))
        if factor < 2 or 2**octaves != factor:
            raise ValueError(f"SuperResolutionNet factor must be a power of two >= 2, got {factor}.")
        self.config = dict(
            factor=factor, features=features, blocks=blocks, min_features=min_features, channels=channels
        )
        self.factor = factor
        self.head = _conv(channels, features)
        self.body = nn.Sequential(*(ResidualBlock(features) for _ in range(blocks)), _conv(features, features))
        stages, width = [], features
        for _ in range(octaves):
            next_width = max(width // 2, min_features)
            stages += [_conv(width, 4 * next_width), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
            stages.append(ResidualBlock(next_width))
            width = next_width
        self.upsample = nn.Sequential(*stages)
        self.tail = _zero_conv(width, channels)

    def forward(self, y: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        size = (y.shape[-2] * self.factor, y.shape[-1] * self.factor)
        h = self.head(y)
        x = bicubic_upsample(y, size) + self.tail(self.upsample(h + self.body(h)))
        return x.clamp(0, 1) if clamp else x


class _Level(nn.Module):
    """One U-Net level: (strided) conv to ``features`` maps, ReLU, residual blocks."""

    def __init__(self, channels_in: int, features: int, stride: int, blocks: int):
        super().__init__()
        self.layers = nn.Sequential(
            _conv(channels_in, features, stride), nn.ReLU(inplace=True), *(ResidualBlock(features) for _ in range(blocks))
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layers(h)


class InpaintingNet(nn.Module):
    """x = m * y + (1 - m) * clamp(u(y * m, m), 0, 1) for y (B, C, H, W) and a 0/1 mask m (1 = observed).

    u: a U-Net. Level 0 works at full resolution with ``features`` maps; each of ``levels`` further
    levels halves the resolution with a stride-2 conv and doubles the maps (up to ``max_features``).
    The decoder upsamples (nearest, then a 3x3 conv), concatenates the encoder's maps of that level
    and applies a conv and ``blocks`` residual blocks. The U-Net predicts a correction to a fill with
    the mean of the observed pixels of each image. H and W must be divisible by 2**levels.

    Args:
        features: feature maps at full resolution.
        levels: number of downsampling levels (3: 32 -> 4 pixels).
        blocks: residual blocks per level, in the encoder and in the decoder.
        max_features: cap of the feature maps.
        channels: image channels.
    """

    def __init__(self, features: int = 32, levels: int = 3, blocks: int = 1, max_features: int = 128, channels: int = 1):
        super().__init__()
        self.config = dict(
            features=features, levels=levels, blocks=blocks, max_features=max_features, channels=channels
        )
        widths = [min(features * 2**level, max_features) for level in range(levels + 1)]
        self.encoder = nn.ModuleList(
            _Level(2 * channels if level == 0 else widths[level - 1], widths[level], 1 if level == 0 else 2, blocks)
            for level in range(levels + 1)
        )
        self.bottleneck = nn.Sequential(*(ResidualBlock(widths[-1]) for _ in range(blocks)))
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(widths[level + 1], widths[level]))
            for level in range(levels)
        )
        self.decoder = nn.ModuleList(_Level(2 * widths[level], widths[level], 1, blocks) for level in range(levels))
        self.tail = _zero_conv(widths[0], channels)

    def forward(self, y: torch.Tensor, mask: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        mask = mask.to(y.dtype).expand_as(y)
        observed = y * mask
        # The mean of the observed pixels is the U-Net's starting point for the missing ones.
        mean = observed.sum(dim=(-2, -1), keepdim=True) / mask.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
        start = observed + (1 - mask) * mean
        skips, h = [], torch.cat([start, mask], dim=1)
        for level in self.encoder:
            h = level(h)
            skips.append(h)
        h = self.bottleneck(h)
        for level in reversed(range(len(self.decoder))):
            h = self.decoder[level](torch.cat([self.up[level](h), skips[level]], dim=1))
        filled = start + self.tail(h)
        return mask * y + (1 - mask) * (filled.clamp(0, 1) if clamp else filled)
