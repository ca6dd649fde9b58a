"""StyleGAN2 generator (Karras et al., 2020), written from the paper's maths.

The parameter names follow the naming used by the published StyleGAN2 checkpoints, so that their
state dictionaries map onto this module without renaming (see ``brgm_pyro/checkpoints/``):

    mapping.fc{i}.weight [out, in], mapping.fc{i}.bias [out], mapping.w_avg [w_dim]
    synthesis.b4.const [C, 4, 4]
    synthesis.b{R}.conv0 (R >= 8, upsampling) and synthesis.b{R}.conv1:
        weight [O, I, 3, 3], bias [O], affine.weight [I, w_dim], affine.bias [I],
        noise_strength [], noise_const [R, R]
    synthesis.b{R}.torgb: weight [C_img, I, 1, 1], bias [C_img], affine.weight, affine.bias

Maths, per layer:

* Fully connected ("equalised learning rate"): ``y = x (a W)^T + b_mul * b`` with
  ``a = lr_mul / sqrt(fan_in)`` and ``b_mul = lr_mul``; the stored weight is initialised
  ``N(0, 1) / lr_mul`` so the effective weight starts at ``N(0, 1/fan_in)``.
* Mapping: ``z / sqrt(mean(z^2) + 1e-8)`` then ``num_layers`` fully connected layers with
  leaky ReLU (slope 0.2) times sqrt(2), ``lr_mul = 0.01``; the result is broadcast to
  ``num_ws`` copies.
* Modulated convolution with style ``s = affine(w)`` (affine bias initialised to 1):
  ``W'_{oik} = W_{oik} s_i`` and, when demodulating,
  ``W''_{oik} = W'_{oik} / sqrt(sum_{i,k} W'^2_{oik} + 1e-8)``.
  It is computed by modulating the activations instead of the weights,
  ``conv(x * s, W) * d_o`` with ``d_o = 1 / sqrt(sum_{i,k} (W_{oik} s_i)^2 + 1e-8)``, which is the
  same linear map and lets one convolution serve the whole batch.
* Synthesis layer: modulated conv, ``+ noise * noise_strength``, ``+ bias``,
  ``lrelu(.) * sqrt(2)``, clamped to ``[-conv_clamp, conv_clamp]`` when set.
* Upsampling layer (conv0): transposed convolution with stride 2, then the FIR filter
  ``[1, 3, 3, 1]^T [1, 3, 3, 1] / 64`` with gain 4 and padding 1.
* ToRGB: modulated 1x1 convolution without demodulation, style scaled by ``1 / sqrt(C_in)``,
  plus bias; the image of the previous block is upsampled with the same FIR filter
  (zero insertion, gain 4) and added ("skip" architecture).
* ``ws`` order: b4.conv1, b4.torgb, then per block conv0, conv1, torgb; the ToRGB layer of a
  block shares its w with the next block's conv0, so ``num_ws = 2 log2(resolution) - 2``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brgm_pyro.allocator import keep_freed_memory
from brgm_pyro.errors import InputError

# The activations of a large generator are freed and allocated again at every step (see allocator.py).
keep_freed_memory()

__all__ = ["StyleGAN2Generator", "MappingNetwork", "SynthesisNetwork", "fir_filter"]

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def fir_filter(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """The separable resampling filter ``k k^T / sum(k)^2`` (sums to 1)."""
    k = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(k, k)
    return f / f.sum()


def fir_conv(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], gain: float = 1.0) -> torch.Tensor:
    """Depthwise 2-D FIR filtering of x (B, C, H, W) after zero padding ``(left, right, top, bottom)``.

    The filter is applied as a convolution (flipped), which for the symmetric resampling filter is
    the same as correlation.
    """
    c = x.shape[1]
    weight = (f.flip([0, 1]) * gain).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    if len(set(pad)) == 1:
        # Equal padding on every side is the convolution's own: no padded copy of x.
        return F.conv2d(x, weight, padding=pad[0], groups=c)
    return F.conv2d(F.pad(x, pad), weight, groups=c)


def upsampling_matrix(f: torch.Tensor, size: int) -> torch.Tensor:
    """The (2 size, size) matrix of 1-D 2x upsampling by zero insertion and the separable filter ``f``.

    ``f = a a^T`` with ``sum(a) = 1`` (as :func:`fir_filter` makes), so ``a`` is its row sums; with ``k``
    taps (``k`` even) the zero-inserted signal is padded by ``(k / 2, k / 2 - 1)``, which is padding
    ``k / 2 - 1`` of a transposed convolution of stride 2. Gain 2 per axis keeps the mean.
    """
    taps = f.shape[0]
    a = f.sum(dim=1) * 2.0
    eye = torch.eye(size, dtype=f.dtype, device=f.device)[:, None]
    return F.conv_transpose1d(eye, a.flip(0)[None, None], stride=2, padding=taps // 2 - 1)[:, 0].t()


def upsample2d(x: torch.Tensor, f: torch.Tensor, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """2x upsampling of x (B, C, H, H): zero insertion, then the FIR filter with gain 4 (keeps the mean).

    The filter is separable, so this is ``U x U^T`` with ``U = upsampling_matrix(f, H)`` (pass it as
    ``matrix`` to reuse it): for the few channels of an image, two matrix products are several times
    faster than a convolution per channel, and the zeros are never stored.
    """
    u = upsampling_matrix(f, x.shape[-1]).to(x.dtype) if matrix is None else matrix
    return u @ x @ u.t()


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) stored as B, H, W, C (see :class:`SynthesisNetwork`); elementwise results keep the
    layout of their operands, so constants added to the feature maps are stored this way too."""
    return x.contiguous(memory_format=torch.channels_last)


_REUSED: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple, tuple, torch.Tensor]]] = weakref.WeakKeyDictionary()


def _batched(x: torch.Tensor) -> torch.Tensor:
    """(C, R, R) as (1, C, R, R); a per-image (B, C, R, R) as it is (noise maps of one's own, ``noise_const`` (B, 1, R, R))."""
    return x[None] if x.dim() == 3 else x


def reused(module: nn.Module, name: str, sources: tuple[torch.Tensor, ...], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()``, kept for ``module`` while its ``sources`` are unchanged and need no gradient.

    Inference keeps G frozen, so what depends on its parameters alone (the demodulation norms, the
    transposed weights, noise plus bias) is the same at every step: computing it once removes over a
    third of the operations of a small generator's forward pass. A source changed in place (an optimiser
    step, ``load_state_dict``) has a new version, one moved by ``.to()`` new storage; either
    recomputes. While a source needs a gradient (training) nothing is kept.
    """
    if torch.is_inference_mode_enabled() or (torch.is_grad_enabled() and any(t.requires_grad for t in sources)):
        return compute()
    # The sources themselves are kept next to their versions and storage: an address could be reused by
    # a new tensor once an old one is freed (a swapped noise map), a kept reference cannot; `.to()` and
    # `.double()` give a parameter new storage and dtype without a new version.
    state = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in sources)
    kept = _REUSED.setdefault(module, {})
    entry = kept.get(name)
    if entry is None or entry[1] != state or any(a is not b for a, b in zip(entry[0], sources, strict=True)):
        kept[name] = entry = (sources, state, compute())
    return entry[2]


class FullyConnectedLayer(nn.Module):
    """``y = act(x (a W)^T + lr_mul * b)`` with ``a = lr_mul / sqrt(in_features)``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: str = "linear",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = reused(self, "weight", (self.weight,), lambda: (self.weight * self.weight_gain).t())
        bias = reused(self, "bias", (self.bias,), lambda: self.bias * self.bias_gain)
        x = torch.addmm(bias, x, weight)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        return x


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> w broadcast to (B, num_ws, w_dim)."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.998,
    ) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            layer = FullyConnectedLayer(
                features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{i}", layer)
        # Running mean of w seen in training, used for the truncation trick.
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if truncation_psi != 1.0:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


def weight_norms(weight: torch.Tensor) -> torch.Tensor:
    """``sum_k W_{oik}^2`` for weight (O, I, k, k), transposed: (I, O)."""
    return weight.square().sum(dim=[2, 3]).t()


def demodulation(norms: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """``d_o = 1 / sqrt(sum_{i,k} (W_{oik} s_i)^2 + 1e-8)`` for styles (B, I) and ``weight_norms(W)``: (B, O).

    ``sum_{i,k} (W_{oik} s_i)^2 = (s^2) @ (sum_k W_{oik}^2)^T``, so the per-sample weights are never formed.
    """
    return (styles.square() @ norms + 1e-8).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: bool = False,
) -> torch.Tensor:
    """Modulated (and optionally demodulated) convolution by modulating activations.

    x (B, I, H, W), weight (O, I, k, k), styles (B, I). Returns (B, O, H', W'); with ``up`` the
    transposed convolution with stride 2 is used (H' = 2H + k - 2) and the caller applies the FIR
    filter. Demodulation coefficients are applied to the output, which is the same linear map as
    demodulating the per-sample weights.
    """
    x = x * styles[..., None, None]
    if up:
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    else:
        x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if demodulate:
        x = x * demodulation(weight_norms(weight), styles)[:, :, None, None]
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling), noise, bias, lrelu * sqrt(2), clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: bool = False,
        conv_clamp: float | None = None,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.up, self.conv_clamp = up, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        styles = self.affine(w)
        # The convolutions read the weight channels-last, the transposed one as (I, O, k, k): stored so once.
        if self.up:
            weight = reused(self, "weight", (self.weight,), lambda: channels_last(self.weight.transpose(0, 1)).transpose(0, 1))
        else:
            weight = reused(self, "weight", (self.weight,), lambda: channels_last(self.weight))
        x = modulated_conv2d(x, weight, styles, demodulate=False, up=self.up)
        if self.up:
            # The FIR filter acts per channel, so it commutes with the demodulation below.
            fir = reused(self, "fir", (self.resample_filter,), self._fir_weight)
            x = F.conv2d(x, fir, padding=1, groups=self.out_channels)
        norms = reused(self, "norms", (self.weight,), lambda: weight_norms(self.weight))
        # lrelu(z) sqrt(2) = lrelu(sqrt(2) z): the gain goes into the demodulation and the shift, so that
        # demodulation, noise, bias and gain are one pass over x and the activation runs in place.
        scale = (demodulation(norms, styles) * LRELU_GAIN)[..., None, None]
        x = torch.addcmul(self._shift(noise_mode, x), x, scale)
        x = F.leaky_relu(x, LRELU_SLOPE, inplace=True)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x

    def _fir_weight(self) -> torch.Tensor:
        """The resampling filter with gain 4 as a depthwise convolution weight (O, 1, k, k)."""
        taps = self.resample_filter.shape[0]
        return (self.resample_filter.flip([0, 1]) * 4.0).expand(self.out_channels, 1, taps, taps).contiguous()

    def _shift(self, noise_mode: str, x: torch.Tensor) -> torch.Tensor:
        """``sqrt(2) (noise * noise_strength + bias)``, broadcastable to x and channels-last like it."""
        bias = self.bias[:, None, None]
        if noise_mode == "const":
            return reused(
                self, "shift", (self.noise_const, self.noise_strength, self.bias),
                lambda: channels_last(_batched(self.noise_const * self.noise_strength + bias) * LRELU_GAIN),
            )
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            return channels_last((noise * self.noise_strength + bias) * LRELU_GAIN)
        if noise_mode == "none":
            return bias * LRELU_GAIN
        raise InputError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}.")


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation (style scaled by 1/sqrt(C_in)), plus bias."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        # A 1x1 convolution is a matrix product, so the per-sample weights W_oi s_bi (B, O, I) are
        # cheap to form, and the modulated copy of x (B, I, H, W) is never made.
        weight = self.weight[..., 0, 0] * styles.unsqueeze(1)
        batch, _, height, width = x.shape
        # x is channels-last (see SynthesisNetwork), so its pixels are the rows of a (B, H W, I) matrix.
        rows = x.permute(0, 2, 3, 1).reshape(batch, height * width, -1)
        x = torch.baddbmm(self.bias, rows, weight.transpose(1, 2)).view(batch, height, width, -1).permute(0, 3, 1, 2)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network ("skip" architecture)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.num_conv = 1
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
            self.num_conv = 2
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: Sequence[torch.Tensor], noise_mode: str = "const"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ws: num_conv + 1 tensors (B, w_dim), the block's conv ws followed by its ToRGB w."""
        if self.in_channels == 0:
            x = channels_last(self.const.unsqueeze(0).expand(ws[0].shape[0], -1, -1, -1))
            x = self.conv1(x, ws[0], noise_mode)
        else:
            x = self.conv0(x, ws[0], noise_mode)
            x = self.conv1(x, ws[1], noise_mode)
        y = self.torgb(x, ws[self.num_conv])
        if img is None:
            return x, y
        matrix = reused(
            self, "upsample", (self.resample_filter,), lambda: upsampling_matrix(self.resample_filter, self.resolution // 2)
        )
        return x, upsample2d(img, self.resample_filter, matrix) + y


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> image (B, img_channels, R, R) in the generator's native [-1, 1].

    The feature maps are channels-last (B, H, W, C in memory): the CPU's convolutions read that
    layout directly (the transposed ones are about a third faster in it), and every elementwise step
    keeps it. The image it returns is contiguous.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        log2 = int(round(math.log2(img_resolution)))
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        self.num_ws = 0
        for r in self.block_resolutions:
            in_ch = channels[r // 2] if r > 4 else 0
            block = SynthesisBlock(in_ch, channels[r], w_dim, r, img_channels, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{r}", block)
        self.num_ws += 1  # the last ToRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", resolution: int | None = None) -> torch.Tensor:
        """The image (B, C, R, R) in [-1, 1]; with ``resolution`` r < R, the image of the skip
        architecture at r, the sum of the ToRGB outputs up to block r (what the network has drawn on
        its way up, without the blocks above: their cost is not paid)."""
        x = img = None
        index = 0
        # One w per layer, split once: the backward of each index of ws would be a zero-filled copy of
        # all of ws, and a recorded log density (inference/map.py) keeps even an index's full slices.
        layer_ws = ws.unbind(1)
        for r in self.block_resolutions:
            if resolution is not None and r > resolution:
                break
            block = getattr(self, f"b{r}")
            x, img = block(x, img, layer_ws[index : index + block.num_conv + 1], noise_mode)
            index += block.num_conv
        return img.contiguous()


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> ws) and ``synthesis`` (ws -> image in [-1, 1]).

    Args:
        resolution: output size, a power of two in 4..1024.
        channels: image channels, 1 (grayscale) or 3 (RGB).
        z_dim, w_dim: latent sizes.
        mapping_layers: depth of the mapping network.
        channel_base, channel_max: feature maps at resolution R are ``min(channel_base // R, channel_max)``.
        conv_clamp: clamp activations to +-conv_clamp (None: no clamp).
        seed: seed of the random initialisation (None: the global torch generator).
        compute_stats: compute ``w_avg``/``w_std`` now (loaders skip it and read them from the file).

    Attributes:
        num_ws: number of w vectors the synthesis network takes, ``2 log2(resolution) - 2``.
        w_avg, w_std: the prior statistics of BRGM (paper Sec. 2.2): mean (w_dim,) and pooled
            per-coordinate standard deviation (scalar) of 10,000 mapping samples drawn with a fixed
            seed; see :meth:`compute_w_stats`.
    """

    def __init__(
        self,
        resolution: int = 32,
        channels: int = 1,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        mapping_lr_multiplier: float = 0.01,
        w_stats_seed: int = 0,
        seed: int | None = None,
        compute_stats: bool = True,
    ) -> None:
        super().__init__()
        if not (isinstance(resolution, int) and 4 <= resolution <= 1024 and resolution & (resolution - 1) == 0):
            raise InputError(f"resolution must be a power of two between 4 and 1024, got {resolution!r}.")
        if channels not in (1, 3):
            raise InputError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
        self.config: dict[str, Any] = dict(
            resolution=resolution,
            channels=channels,
            z_dim=z_dim,
            w_dim=w_dim,
            mapping_layers=mapping_layers,
            channel_base=channel_base,
            channel_max=channel_max,
            conv_clamp=conv_clamp,
            mapping_lr_multiplier=mapping_lr_multiplier,
            w_stats_seed=w_stats_seed,
        )
        self.resolution, self.channels, self.z_dim, self.w_dim = resolution, channels, z_dim, w_dim
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.synthesis = SynthesisNetwork(w_dim, resolution, channels, channel_base, channel_max, conv_clamp)
            self.num_ws = self.synthesis.num_ws
            self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_multiplier)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.register_buffer("w_std", torch.ones([]))
        if compute_stats:
            self.compute_w_stats()

    @torch.no_grad()
    def compute_w_stats(self, num_samples: int = 10_000, seed: int | None = None) -> None:
        """Set ``w_avg`` and ``w_std`` from ``num_samples`` mapping outputs of z ~ N(0, I).

        ``w_std`` is the pooled per-coordinate standard deviation
        ``sqrt(mean_{n,d} (w_{n,d} - w_avg_d)^2)``: the sigma of the paper's prior
        ``w_{l,d} ~ N(w_avg_d, sigma^2)``.
        """
        seed = self.config["w_stats_seed"] if seed is None else seed
        device = self.w_avg.device
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num_samples, self.z_dim, generator=gen).to(device)
        w = torch.cat([self.mapping(chunk)[:, 0] for chunk in z.split(2000)])
        self.w_avg.copy_(w.mean(dim=0))
        self.w_std.copy_((w - self.w_avg).square().mean().sqrt())

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi=truncation_psi), noise_mode=noise_mode)

    @torch.no_grad()
    def sample(self, num: int, seed: int = 0, truncation_psi: float = 1.0, batch_size: int = 256) -> torch.Tensor:
        """``num`` images in [0, 1] from z drawn with ``seed``, shape (num, C, R, R)."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num, self.z_dim, generator=gen)
        device = self.w_avg.device
        out = [self(chunk.to(device), truncation_psi) for chunk in z.split(batch_size)]
        return to_unit(torch.cat(out), clamp=True)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


def to_unit(img: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    """Generator range [-1, 1] -> API range [0, 1]. The one place this conversion happens.

    Likelihoods use the unclamped map (gradients flow everywhere); images handed to a user are
    clamped.
    """
    img = (img + 1.0) / 2.0
    return img.clamp(0.0, 1.0) if clamp else img


def describe(G: StyleGAN2Generator) -> dict[str, Any]:
    """A small JSON-able summary of a generator."""
    return dict(G.config, num_ws=G.num_ws, parameters=G.num_parameters(), w_std=float(np.asarray(G.w_std.cpu())))
