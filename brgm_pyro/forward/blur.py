"""``Blur``: convolution with a 2-D kernel at the image's size, with a choice of border."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from brgm_pyro.errors import InputError
from brgm_pyro.forward import gram as grams
from brgm_pyro.forward.base import Operator, image_shape
from brgm_pyro.forward.kernels import check_kernel, conv_axis_matrix, separable_factors
from brgm_pyro.forward.padding import MODES, pad, pad_index, unpad

__all__ = ["Blur"]


class Blur(Operator):
    r"""Blur by 2-D convolution with a kernel k, same size output: y_c = k * x_c for every channel c.

    .. math::

        y[i, j] = \sum_{u, v} k[u, v]\, x[i + c_h - u,\ j + c_w - v], \qquad (c_h, c_w) = (k_h // 2, k_w // 2),

    a true convolution (the kernel is flipped, no difference for a symmetric kernel), centred on
    tap (kh // 2, kw // 2). The kernel is used as given: normalise it to sum 1 to keep brightness.

    Border (``padding``): "reflect" (mirror without repeating the edge pixel, as ``torch.nn.functional.pad``
    and scipy's "mirror"; needs kernel half-size < image size), "replicate" (repeat the edge),
    "circular" (wrap around) or "zeros". Every output pixel is observed.

    Structure: the adjoint is the transposed convolution followed by the padding's adjoint
    (``brgm_pyro.forward.padding``); F F^T is a Kronecker product for a separable kernel (a
    Gaussian), diagonal in Fourier space for a circular border, else formed from f (``Operator.gram``).

    Args:
        kernel: 2-D tensor (kh, kw), applied to every channel.
        padding: "reflect", "replicate", "circular" or "zeros".

    Example:
        >>> import torch
        >>> from brgm_pyro.forward import Blur
        >>> f = Blur.gaussian(sigma=1.0)
        >>> f.kernel.shape
        torch.Size([7, 7])
        >>> torch.allclose(f(torch.full((1, 3, 16, 16), 0.5)), torch.tensor(0.5))
        True
    """

    def __init__(self, kernel: torch.Tensor, padding: str = "reflect"):
        super().__init__()
        if padding not in MODES:
            raise InputError(
                f"Unknown Blur padding {padding!r}; choose one of {', '.join(map(repr, MODES))}."
            )
        self.padding = padding
        self.register_buffer("kernel", check_kernel(kernel, "Blur"))

    @classmethod
    def gaussian(cls, sigma: float, size: int | None = None, padding: str = "reflect") -> Blur:
        """Blur with the normalised Gaussian kernel exp(-(u^2 + v^2) / (2 sigma^2)) of odd ``size``.

        ``size`` defaults to 2 ceil(3 sigma) + 1; ``sigma`` is in pixels.
        """
        if not isinstance(sigma, (int, float)) or not sigma > 0 or not math.isfinite(sigma):
            raise InputError(f"Blur gaussian sigma must be a positive number of pixels, got {sigma!r}.")
        size = 2 * math.ceil(3 * sigma) + 1 if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise InputError(
                f"Blur gaussian size must be a positive odd integer, got {size!r}; pass e.g. size=7."
            )
        taps = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        profile = torch.exp(-0.5 * (taps / sigma) ** 2)
        kernel = profile[:, None] * profile[None, :]
        return cls((kernel / kernel.sum()).to(torch.float32), padding=padding)

    def extra_repr(self) -> str:
        return f"kernel_shape={tuple(self.kernel.shape)}, padding={self.padding!r}"

    def _pads(self) -> tuple[int, int, int, int]:
        kh, kw = self.kernel.shape
        return ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        shape = image_shape(shape)
        if self.padding in ("reflect", "circular"):
            _, right, _, bottom = self._pads()
            limit = 1 if self.padding == "reflect" else 0
            for axis, size, pad, kernel_size in (
                ("H", shape[2], bottom, self.kernel.shape[0]),
                ("W", shape[3], right, self.kernel.shape[1]),
            ):
                if pad > size - limit:
                    raise InputError(
                        f"Blur kernel of {kernel_size} pixels along {axis} needs {self.padding} padding of "
                        f"{pad} pixels, more than an image of {size} pixels allows; use a smaller kernel "
                        "or padding='replicate'."
                    )
        return shape

    def _index(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        left, right, top, bottom = self._pads()
        return pad_index(height, top, bottom, self.padding), pad_index(width, left, right, self.padding)

    def _linear_map(self, x: torch.Tensor, absolute: bool) -> torch.Tensor:
        b, c, h, w = x.shape
        kernel = self.kernel.to(device=x.device, dtype=x.dtype).flip(-2, -1)
        if absolute:
            kernel = kernel.abs()
        padded = pad(x.reshape(b * c, 1, h, w), *self._index(h, w))
        return F.conv2d(padded, kernel[None, None]).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self._linear_map(x, absolute=False)

    def _abs_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear_map(x, absolute=True)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = y.shape
        kernel = self.kernel.to(device=y.device, dtype=y.dtype).flip(-2, -1)
        spread = F.conv_transpose2d(y.reshape(b * c, 1, h, w), kernel[None, None])
        return unpad(spread, *self._index(h, w), h, w).reshape(b, c, h, w)

    def axis_matrices(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        _, _, h, w = self.output_shape(shape)
        factors = separable_factors(self.kernel.flip(-2, -1))
        if factors is None:
            return None
        index_h, index_w = self._index(h, w)
        return conv_axis_matrix(factors[0], index_h, h, 1), conv_axis_matrix(factors[1], index_w, w, 1)

    def _make_gram(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> grams.Gram:
        if self.padding == "circular" and self.axis_matrices(shape) is None:
            return grams.FourierGram(self.kernel, shape[2], shape[3], dtype, device)
        return super()._make_gram(shape, device, dtype)
