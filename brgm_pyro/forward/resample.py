"""``Downsample``: antialiased reduction by an integer factor, the corruption of super-resolution.

Border rule of the named resampling kernels: weights that fall outside the image are dropped and
the remaining ones renormalised to sum 1 (Pillow's rule, so "bicubic", "bilinear" and "box" match
``PIL.Image.resize`` everywhere, border included).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import index

import torch
import torch.nn.functional as F

from brgm_pyro.errors import InputError
from brgm_pyro.forward.base import Operator, image_shape
from brgm_pyro.forward.kernels import check_kernel, conv_axis_matrix, padding_error, separable_factors
from brgm_pyro.forward.padding import pad, pad_index, unpad

__all__ = ["Downsample"]


def _cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (Pillow's BICUBIC and MATLAB's imresize), support 2."""
    t = t.abs()
    inner = ((a + 2) * t - (a + 3)) * t * t + 1
    outer = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def _triangle(t: torch.Tensor) -> torch.Tensor:
    return (1 - t.abs()).clamp(min=0)


def _box(t: torch.Tensor) -> torch.Tensor:
    return ((t > -0.5) & (t <= 0.5)).to(t.dtype)


# name -> (kernel on the output grid, its support in output pixels)
_RESAMPLING_KERNELS = {"box": (_box, 0.5), "bilinear": (_triangle, 1.0), "bicubic": (_cubic, 2.0)}
KERNEL_NAMES = ("box", "bilinear", "bicubic", "gaussian")


def resampling_matrix(size: int, factor: int, kernel: str, sigma: float | None) -> torch.Tensor:
    """The (size // factor, size) float64 matrix A of a 1-D antialiased reduction by ``factor``.

    Output i is centred at c = (i + 0.5) * factor in continuous coordinates (pixel j covers [j, j + 1]).
    It takes the input pixels j with round(c - s) <= j < round(c + s), s the support in input pixels,
    with weights k(j + 0.5 - c), and renormalises them to sum 1 (Pillow's rule).
    """
    n_out = size // factor
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * factor
    if kernel == "gaussian":
        support = max(4.0 * sigma, 1.0)
    else:
        kernel_fn, support = _RESAMPLING_KERNELS[kernel]
        support = support * factor
    first = (centre - support + 0.5).trunc().clamp(min=0)  # C's (int) cast, as in Pillow
    stop = (centre + support + 0.5).trunc().clamp(max=size)
    j = torch.arange(size, dtype=torch.float64)
    inside = (j >= first[:, None]) & (j < stop[:, None])
    distance = j[None, :] + 0.5 - centre[:, None]
    if kernel == "gaussian":
        # Normalising in log space keeps tiny sigmas from underflowing to an all-zero row.
        log_weight = (-0.5 * (distance / sigma) ** 2).masked_fill(~inside, -math.inf)
        weight = torch.exp(log_weight - log_weight.max(dim=1, keepdim=True).values)
    else:
        weight = kernel_fn(distance / factor) * inside
    return weight / weight.sum(dim=1, keepdim=True)


class Downsample(Operator):
    r"""Antialiased downsampling by an integer factor: y = A_H x A_W^T per channel.

    For a named kernel, A (H/factor x H) is the 1-D reduction matrix

    .. math::

        A_{ij} = k(j + 1/2 - c_i) / \sum_{j'} k(j' + 1/2 - c_i), \qquad c_i = (i + 1/2)\,\mathrm{factor},

    summed over the input pixels j inside the support. The kernels:

    - ``"box"``: k = 1 on (-factor/2, factor/2], the mean of each factor x factor block;
    - ``"bilinear"``: the triangle of half-width factor (Pillow's BILINEAR);
    - ``"bicubic"``: Keys' cubic (a = -0.5) stretched by factor, support 2 factor
      (Pillow's BICUBIC, MATLAB's imresize);
    - ``"gaussian"``: exp(-d^2 / (2 sigma^2)) with d and sigma in input pixels, truncated at
      max(4 sigma, 1); ``sigma`` defaults to factor / 2.

    Border rule: weights that fall outside the image are dropped and the rest renormalised to sum
    1, as Pillow does, so "box", "bilinear" and "bicubic" equal ``PIL.Image.resize`` everywhere.

    An explicit 2-D kernel tensor (kh, kw) is normalised to sum 1, convolved with the image
    (flipped, as a convolution; no difference for a symmetric kernel) with reflect padding at the
    border, and sampled every ``factor`` pixels; each output is centred on its factor x factor block
    (to the nearest pixel up-left when kernel size and factor differ in parity). Thus
    ``torch.ones(f, f)`` gives block means and a 1 x 1 kernel gives ``x[..., ::f, ::f]``.

    Structure: the adjoint is A_H^T y A_W (a transposed strided convolution and the padding's
    adjoint for an explicit kernel); F F^T = A_H A_H^T (x) A_W A_W^T for a named or a separable
    kernel; every output pixel is observed; the task is "superres-x{factor}" for the bicubic kernel
    ("superres-x{factor}-{kernel}" for another named one). Matrices are cached per (size, device, dtype).

    Args:
        factor: positive integer that divides H and W; the output is (B, C, H/factor, W/factor).
        kernel: "box", "bilinear", "bicubic", "gaussian", or a 2-D tensor.
        sigma: standard deviation in input pixels of the "gaussian" kernel (only for that kernel).

    Example:
        >>> import torch
        >>> from brgm_pyro.forward import Downsample
        >>> f = Downsample(factor=4, kernel="bicubic")
        >>> f(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 8, 8])
        >>> torch.allclose(f(torch.full((1, 1, 32, 32), 0.3)), torch.tensor(0.3))
        True
    """

    def __init__(self, factor: int, kernel: str | torch.Tensor = "bicubic", sigma: float | None = None):
        super().__init__()
        if isinstance(factor, bool) or not hasattr(factor, "__index__") or index(factor) < 1:
            raise InputError(
                f"Downsample factor must be a positive integer, got {factor!r}; "
                "pass e.g. factor=4 (resize first for non-integer ratios)."
            )
        self.factor = factor = index(factor)
        if isinstance(kernel, str):
            if kernel not in KERNEL_NAMES:
                raise InputError(
                    f"Unknown Downsample kernel {kernel!r}; choose one of {', '.join(map(repr, KERNEL_NAMES))} "
                    "or pass a 2-D kernel tensor."
                )
            if kernel == "gaussian":
                sigma = factor / 2 if sigma is None else sigma
                if not isinstance(sigma, (int, float)) or not sigma > 0 or not math.isfinite(sigma):
                    raise InputError(
                        f"Downsample gaussian sigma must be a positive number of input pixels, got {sigma!r}; "
                        "pass e.g. sigma=factor / 2."
                    )
                sigma = float(sigma)
            self.kernel_name: str | None = kernel
            self.register_buffer("kernel", None)
        else:
            kernel = check_kernel(kernel, "Downsample")
            total = kernel.sum()
            if abs(float(total)) < 1e-12:
                raise InputError(
                    "Downsample kernel sums to 0, so it cannot be normalised to sum 1; "
                    "pass a kernel with a non-zero sum."
                )
            self.kernel_name = None
            self.register_buffer("kernel", kernel / total)
        if sigma is not None and self.kernel_name != "gaussian":
            raise InputError(
                "Downsample sigma is only used by kernel='gaussian'; drop sigma or choose kernel='gaussian'."
            )
        self.sigma = sigma
        self._matrices: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def extra_repr(self) -> str:
        kernel = repr(self.kernel_name) if self.kernel_name else f"tensor{tuple(self.kernel.shape)}"
        sigma = f", sigma={self.sigma}" if self.sigma is not None else ""
        return f"factor={self.factor}, kernel={kernel}{sigma}"

    @property
    def task(self) -> str | None:
        if self.kernel_name is None:
            return None
        suffix = "" if self.kernel_name == "bicubic" else f"-{self.kernel_name}"
        return f"superres-x{self.factor}{suffix}"

    def _padding(self, kernel_size: int) -> tuple[int, int, int]:
        """Reflect padding (before, after) and crop start so that output i covers its block."""
        offset = (self.factor - kernel_size) // 2
        before = max(0, -offset)
        after = max(0, offset + kernel_size - self.factor)
        return before, after, offset + before

    def _index(self, size: int, kernel_size: int) -> torch.Tensor:
        """The input pixel each tap position reads along one axis (reflect padding, then the crop)."""
        before, after, start = self._padding(kernel_size)
        length = (size // self.factor - 1) * self.factor + kernel_size
        return pad_index(size, before, after, "reflect")[start : start + length]

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        b, c, h, w = image_shape(shape)
        if h % self.factor or w % self.factor:
            raise InputError(
                f"Downsample factor {self.factor} does not divide the image size {h}x{w}; "
                "choose a factor that divides it, or crop/pad the image."
            )
        if self.kernel is not None:
            for axis, size, kernel_size in (("H", h, self.kernel.shape[0]), ("W", w, self.kernel.shape[1])):
                before, after, _ = self._padding(kernel_size)
                if max(before, after) >= size:
                    raise padding_error("Downsample", max(before, after), kernel_size, size, axis)
        return torch.Size((b, c, h // self.factor, w // self.factor))

    def input_shape(self, shape: Sequence[int]) -> torch.Size:
        b, c, h, w = image_shape(shape)
        return torch.Size((b, c, h * self.factor, w * self.factor))

    def matrix(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """The 1-D reduction matrix A (size / factor, size) of a named kernel, on ``like``'s device and dtype."""
        # int(): under torch.jit.trace (inference/map.py) a size is a tensor, which would miss the
        # cache and record the matrix's construction into every replayed step.
        key = (int(size), like.device, like.dtype)
        if key not in self._matrices:
            matrix = resampling_matrix(key[0], self.factor, self.kernel_name, self.sigma)
            self._matrices[key] = matrix.to(device=like.device, dtype=like.dtype)
        return self._matrices[key]

    def _linear_map(self, x: torch.Tensor, absolute: bool) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.kernel is None:
            a_h, a_w = self.matrix(h, x), self.matrix(w, x)
            if absolute:
                a_h, a_w = a_h.abs(), a_w.abs()
            return a_h @ x @ a_w.transpose(0, 1)
        kernel = self.kernel.to(device=x.device, dtype=x.dtype).flip(-2, -1)
        if absolute:
            kernel = kernel.abs()
        index_h, index_w = self._index(h, kernel.shape[0]), self._index(w, kernel.shape[1])
        padded = pad(x.reshape(b * c, 1, h, w), index_h, index_w)
        y = F.conv2d(padded, kernel[None, None], stride=self.factor)
        return y.reshape(b, c, h // self.factor, w // self.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self._linear_map(x, absolute=False)

    def _abs_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear_map(x, absolute=True)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        b, c, h_out, w_out = y.shape
        h, w = h_out * self.factor, w_out * self.factor
        if self.kernel is None:
            return self.matrix(h, y).transpose(0, 1) @ y @ self.matrix(w, y)
        kernel = self.kernel.to(device=y.device, dtype=y.dtype).flip(-2, -1)
        index_h, index_w = self._index(h, kernel.shape[0]), self._index(w, kernel.shape[1])
        spread = F.conv_transpose2d(y.reshape(b * c, 1, h_out, w_out), kernel[None, None], stride=self.factor)
        return unpad(spread, index_h, index_w, h, w).reshape(b, c, h, w)

    def axis_matrices(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        _, _, h, w = self.input_shape(self.output_shape(shape))
        if self.kernel is None:
            probe = torch.zeros((), dtype=torch.float64)
            return self.matrix(h, probe), self.matrix(w, probe)
        factors = separable_factors(self.kernel.flip(-2, -1))
        if factors is None:
            return None
        (k_h, k_w), sizes = factors, (h, w)
        return tuple(conv_axis_matrix(k, self._index(size, k.numel()), size, self.factor)
                     for k, size in zip((k_h, k_w), sizes))
