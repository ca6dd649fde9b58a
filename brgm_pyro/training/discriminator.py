"""StyleGAN2 discriminator ("resnet" architecture), written from the StyleGAN2 paper's description.

Only the training recipe (``recipe.py``) uses it; reconstruction needs the generator alone.

* Equalised-learning-rate convolutions and dense layers: weights ``N(0, 1)`` scaled at run time by
  ``1 / sqrt(fan_in)``.
* FromRGB (1x1 conv, lrelu) at the top resolution, then one residual block per resolution:
  ``(skip(x) + conv1_down(conv0(x))) * sqrt(0.5)`` where downsampling convolutions blur with the
  ``[1, 3, 3, 1]`` filter first and then stride by 2, and ``skip`` is a blurred 1x1 stride-2 conv.
* Epilogue at 4x4: minibatch standard deviation (groups of up to 4, one feature), 3x3 conv,
  dense layer, and a dense output giving one logit per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from brgm_pyro.stylegan2 import LRELU_GAIN, LRELU_SLOPE, FullyConnectedLayer, fir_conv, fir_filter

__all__ = ["Discriminator"]


class Conv2dLayer(nn.Module):
    """Equalised-lr conv, optional blur + stride-2 downsampling, bias, optional lrelu * sqrt(2)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "lrelu",
        down: bool = False,
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.down, self.activation, self.gain = down, activation, gain
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        k = w.shape[-1]
        if self.down:
            # Blur so that the strided conv samples a low-passed signal; the padding keeps H/2 out.
            pad = (k + 1) // 2
            x = fir_conv(x, self.resample_filter, (pad, pad, pad, pad))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=k // 2)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        return x * self.gain if self.gain != 1.0 else x


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=True, gain=math.sqrt(0.5))
        self.skip = Conv2dLayer(
            in_channels, out_channels, 1, bias=False, activation="linear", down=True, gain=math.sqrt(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.conv1(self.conv0(x))


class MinibatchStd(nn.Module):
    """Append the mean (over features and pixels) of the per-group standard deviation as a channel."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if n % min(self.group_size, n) == 0 else 1
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
        y = y.mean(dim=[1, 2, 3])  # (n / g,)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """D(x): images (B, C, R, R) in [-1, 1] -> logits (B,)."""

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
    ) -> None:
        super().__init__()
        log2 = int(round(math.log2(resolution)))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        ch = {r: min(channel_base // r, channel_max) for r in [2**i for i in range(2, log2 + 1)]}
        self.fromrgb = Conv2dLayer(channels, ch[resolution], 1)
        for r in self.block_resolutions:
            setattr(self, f"b{r}", DiscriminatorBlock(ch[r], ch[r // 2]))
        c4 = ch[4]
        self.mbstd = MinibatchStd(mbstd_group_size)
        self.conv = Conv2dLayer(c4 + 1, c4, 3)
        self.fc = FullyConnectedLayer(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnectedLayer(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.fromrgb(img)
        for r in self.block_resolutions:
            x = getattr(self, f"b{r}")(x)
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1))).squeeze(1)
