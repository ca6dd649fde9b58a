"""Corruption operators f of the forward model y = f(x) (the paper's super-resolution and inpainting tasks).

Every operator is a linear, differentiable ``torch.nn.Module`` on images x of shape (B, C, H, W)
and works on the device and dtype of its input. Besides ``forward`` each operator has:

- ``output_shape(shape)``: the shape of f(x) for an input of ``shape``; raises ValueError (one
  sentence naming the problem and the fix) when f cannot apply to that shape.
- ``check(x)``: validates a tensor (4-D, floating point, compatible size) and returns the output
  shape; ``forward`` calls it, so bad input never reaches torch.

Bad values raise ValueError and arguments of the wrong type (not a tensor, not an Operator)
TypeError, each with one sentence naming the problem and the fix.
- ``observed(shape)``: a 0/1 float mask broadcastable to ``output_shape(shape)``, 1 where the output
  pixel is observed, i.e. depends only on observed input pixels. Only these pixels enter a likelihood.

Border rule of the resampling kernels of ``Downsample``: weights that fall outside the image are
dropped and the remaining ones renormalised to sum 1 (Pillow's rule, so "bicubic", "bilinear" and
"box" match ``PIL.Image.resize`` everywhere, border included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from operator import index

import torch
import torch.nn.functional as F
from torch import nn

from brgm_pyro.errors import InputError, InputTypeError

__all__ = ["Blur", "Compose", "Downsample", "Identity", "Mask", "Operator", "per_draw"]


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _image_shape(shape: Sequence[int]) -> torch.Size:
    """Validate an image shape (B, C, H, W) and return it as a torch.Size."""
    shape = tuple(shape)
    if len(shape) != 4 or any(not hasattr(s, "__index__") or index(s) < 1 for s in shape):
        raise InputError(
            f"Expected an image shape (B, C, H, W) of four positive sizes, got {_shape_text(shape)}; "
            "add the missing batch or channel dimension."
        )
    return torch.Size(index(s) for s in shape)


class Operator(nn.Module):
    """A linear corruption operator f on images (B, C, H, W); the base of the operators of this module.

    The defaults are those of an operator that keeps the image size and observes every pixel.
    Subclasses implement ``forward`` (calling ``self.check(x)`` first) and override
    ``output_shape``, ``observed`` and ``_abs_forward`` where they differ.
    """

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        """Shape of f(x) for x of ``shape`` (B, C, H, W); raises ValueError if f cannot apply to it."""
        return _image_shape(shape)

    def check(self, x: torch.Tensor) -> torch.Size:
        """Validate the input images ``x`` (a floating-point (B, C, H, W) tensor); return the output shape."""
        if not isinstance(x, torch.Tensor):
            raise InputTypeError(
                f"Expected the images as a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor."
            )
        if x.dim() != 4:
            raise InputError(
                f"Expected images of shape (B, C, H, W), got a {x.dim()}-D tensor of shape "
                f"{_shape_text(x.shape)}; add the batch/channel dimensions, e.g. x[None] for one image."
            )
        if not x.is_floating_point():
            raise InputError(
                f"Expected floating-point images in [0, 1], got dtype {x.dtype}; convert with x.float() / 255."
            )
        return self.output_shape(x.shape)

    def _device(self, device: torch.device | str | None) -> torch.device:
        if device is not None:
            return torch.device(device)
        buffer = next(self.buffers(), None)
        return buffer.device if buffer is not None else torch.device("cpu")

    def observed(
        self,
        shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Observation mask of f(x) for x of ``shape`` (B, C, H, W): 1 = observed, 0 = missing.

        Returns a 0/1 tensor of ``dtype`` broadcastable to ``output_shape(shape)``, on ``device``
        (default: the device of the operator's buffers, else the CPU). Here every pixel is observed.
        """
        out = self.output_shape(shape)
        return torch.ones(1, 1, out[2], out[3], device=self._device(device), dtype=dtype)

    def _abs_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply |f|, the operator with the absolute values of its weights (pushes masks in Compose).

        The default ``self(x)`` is right for operators whose weights are non-negative.
        """
        return self(x)


class Identity(Operator):
    """The identity f(x) = x: no corruption, every pixel observed.

    Example:
        >>> import torch
        >>> from brgm_pyro.forward import Identity
        >>> x = torch.rand(2, 3, 8, 8)
        >>> torch.equal(Identity()(x), x)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return x


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
_KERNEL_NAMES = ("box", "bilinear", "bicubic", "gaussian")


def _resampling_matrix(size: int, factor: int, kernel: str, sigma: float | None) -> torch.Tensor:
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


def _check_kernel(kernel: torch.Tensor, owner: str) -> torch.Tensor:
    """Validate an explicit 2-D kernel; return it as a floating-point tensor."""
    if not isinstance(kernel, torch.Tensor):
        raise InputTypeError(
            f"{owner} kernel must be a 2-D torch.Tensor, got {type(kernel).__name__}; "
            "pass e.g. torch.ones(3, 3) / 9."
        )
    if kernel.dim() != 2 or kernel.numel() == 0:
        raise InputError(
            f"{owner} kernel must be a non-empty 2-D tensor (kh, kw), got shape {_shape_text(kernel.shape)}; "
            "one kernel is applied to every channel."
        )
    if not kernel.is_floating_point():
        kernel = kernel.to(torch.float32)
    if not torch.isfinite(kernel).all():
        raise InputError(f"{owner} kernel holds NaN or infinite values; pass a finite kernel.")
    return kernel


def _padding_error(owner: str, pad: int, kernel_size: int, image_size: int, axis: str) -> InputError:
    return InputError(
        f"{owner} kernel of {kernel_size} pixels along {axis} needs reflect padding of {pad} pixels, "
        f"but an image of {image_size} pixels allows at most {image_size - 1}; use a smaller kernel "
        "or a larger image."
    )


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

    Every output pixel is observed. Resampling matrices are cached per (size, device, dtype).

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
            if kernel not in _KERNEL_NAMES:
                raise InputError(
                    f"Unknown Downsample kernel {kernel!r}; choose one of {', '.join(map(repr, _KERNEL_NAMES))} "
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
            kernel = _check_kernel(kernel, "Downsample")
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

    def _padding(self, kernel_size: int) -> tuple[int, int, int]:
        """Reflect padding (before, after) and crop start so that output i covers its block."""
        offset = (self.factor - kernel_size) // 2
        before = max(0, -offset)
        after = max(0, offset + kernel_size - self.factor)
        return before, after, offset + before

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        b, c, h, w = _image_shape(shape)
        if h % self.factor or w % self.factor:
            raise InputError(
                f"Downsample factor {self.factor} does not divide the image size {h}x{w}; "
                "choose a factor that divides it, or crop/pad the image."
            )
        if self.kernel is not None:
            for axis, size, kernel_size in (("H", h, self.kernel.shape[0]), ("W", w, self.kernel.shape[1])):
                before, after, _ = self._padding(kernel_size)
                if max(before, after) >= size:
                    raise _padding_error("Downsample", max(before, after), kernel_size, size, axis)
        return torch.Size((b, c, h // self.factor, w // self.factor))

    def _matrix(self, size: int, like: torch.Tensor) -> torch.Tensor:
        # int(): under torch.jit.trace (inference/map.py) a size is a tensor, which would miss the
        # cache and record the matrix's construction into every replayed step.
        key = (int(size), like.device, like.dtype)
        if key not in self._matrices:
            matrix = _resampling_matrix(key[0], self.factor, self.kernel_name, self.sigma)
            self._matrices[key] = matrix.to(device=like.device, dtype=like.dtype)
        return self._matrices[key]

    def _linear_map(self, x: torch.Tensor, absolute: bool) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.kernel is None:
            a_h, a_w = self._matrix(h, x), self._matrix(w, x)
            if absolute:
                a_h, a_w = a_h.abs(), a_w.abs()
            return a_h @ x @ a_w.transpose(0, 1)
        kernel = self.kernel.to(device=x.device, dtype=x.dtype).flip(-2, -1)
        if absolute:
            kernel = kernel.abs()
        top, bottom, start_h = self._padding(kernel.shape[0])
        left, right, start_w = self._padding(kernel.shape[1])
        padded = F.pad(x.reshape(b * c, 1, h, w), (left, right, top, bottom), mode="reflect")
        y = F.conv2d(padded[..., start_h:, start_w:], kernel[None, None], stride=self.factor)
        h_out, w_out = h // self.factor, w // self.factor
        return y[..., :h_out, :w_out].reshape(b, c, h_out, w_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self._linear_map(x, absolute=False)

    def _abs_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear_map(x, absolute=True)


class Mask(Operator):
    r"""Inpainting mask: y = m \odot x, with m = 1 (True) for observed pixels and 0 for missing ones.

    The mask broadcasts against the images: (H, W) or (1, H, W) for every image and channel,
    (C, H, W) per channel, (B, 1, H, W) or (B, C, H, W) per image of a batch of B. Missing pixels of y
    are 0 and unobserved: ``observed(shape)`` returns the mask itself.

    Args:
        mask: a bool tensor, or a numeric tensor of 0s and 1s, of one of the shapes above.

    Example:
        >>> import torch
        >>> from brgm_pyro.forward import Mask
        >>> f = Mask.center_box(8, 4)
        >>> y = f(torch.ones(1, 1, 8, 8))
        >>> int(y.sum()), int(f.observed((1, 1, 8, 8)).sum())
        (48, 48)
    """

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        mask = torch.as_tensor(mask)
        if mask.dim() not in (2, 3, 4):
            raise InputError(
                f"Mask must have shape (H, W), (C, H, W) or (B, C, H, W), got {_shape_text(mask.shape)}; "
                "drop or add dimensions to match."
            )
        if mask.dtype != torch.bool and (mask.is_complex() or not ((mask == 0) | (mask == 1)).all()):
            raise InputError(
                "Mask values must be 0 (missing) or 1 (observed) or bool; threshold the mask first, "
                "e.g. Mask(m > 0.5)."
            )
        self.register_buffer("mask", mask.to(mask.dtype if mask.is_floating_point() else torch.float32))

    def extra_repr(self) -> str:
        return f"mask_shape={tuple(self.mask.shape)}"

    @classmethod
    def center_box(cls, size: int | tuple[int, int], box: int | tuple[int, int]) -> Mask:
        """Mask with a centred box of ``box`` (h, w) missing pixels in an image of ``size`` (H, W)."""
        (height, width), (box_h, box_w) = _pair(size, "size"), _pair(box, "box")
        if box_h > height or box_w > width:
            raise InputError(
                f"Mask box {box_h}x{box_w} is larger than the image {height}x{width}; choose a smaller box."
            )
        mask = torch.ones(height, width)
        top, left = (height - box_h) // 2, (width - box_w) // 2
        mask[top : top + box_h, left : left + box_w] = 0
        return cls(mask)

    @classmethod
    def half(cls, size: int | tuple[int, int], side: str = "right") -> Mask:
        """Mask whose ``side`` half ("left", "right", "top" or "bottom") of an image of ``size`` is missing."""
        height, width = _pair(size, "size")
        mask = torch.ones(height, width)
        if side == "left":
            mask[:, : width // 2] = 0
        elif side == "right":
            mask[:, width - width // 2 :] = 0
        elif side == "top":
            mask[: height // 2] = 0
        elif side == "bottom":
            mask[height - height // 2 :] = 0
        else:
            raise InputError(f"Unknown Mask.half side {side!r}; choose 'left', 'right', 'top' or 'bottom'.")
        return cls(mask)

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        shape = _image_shape(shape)
        b, c, h, w = shape
        mask_h, mask_w = self.mask.shape[-2:]
        if (mask_h, mask_w) != (h, w):
            raise InputError(
                f"Mask of size {mask_h}x{mask_w} does not match the image size {h}x{w}; "
                "build the mask at the size of the image it is applied to."
            )
        if self.mask.dim() >= 3 and self.mask.shape[-3] not in (1, c):
            raise InputError(
                f"Mask has {self.mask.shape[-3]} channels but the images have {c}; "
                "use a mask with 1 channel or one per image channel."
            )
        if self.mask.dim() == 4 and self.mask.shape[0] not in (1, b):
            raise InputError(
                f"Mask holds {self.mask.shape[0]} per-image masks but the batch has {b} images; "
                "pass one mask per image, or one (H, W) mask for all."
            )
        return shape

    def observed(
        self,
        shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """The mask itself, as a 4-D 0/1 tensor of ``dtype`` broadcastable to the images (see Operator)."""
        self.output_shape(shape)
        mask = self.mask.reshape((1,) * (4 - self.mask.dim()) + tuple(self.mask.shape))
        return mask.to(device=self._device(device), dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self.mask.to(device=x.device, dtype=x.dtype) * x


def per_draw(f: Operator, batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """f on draws stacked draw-major, (S * batch, C, H, W) as ``(S, batch, ...).flatten(0, 1)``: each draw's
    ``batch`` images go through f together, so that a mask of one image stays that image's."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([f(part) for part in x.split(batch)])

    return apply


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int) or v < 1 for v in pair):
        raise InputError(f"Mask {name} must be a positive int or a pair (h, w) of them, got {value!r}.")
    return pair


_PADDINGS = {"reflect": "reflect", "replicate": "replicate", "circular": "circular", "zeros": "constant"}


class Blur(Operator):
    r"""Blur by 2-D convolution with a kernel k, same size output: y_c = k * x_c for every channel c.

    .. math::

        y[i, j] = \sum_{u, v} k[u, v]\, x[i + c_h - u,\ j + c_w - v], \qquad (c_h, c_w) = (k_h // 2, k_w // 2),

    a true convolution (the kernel is flipped, no difference for a symmetric kernel), centred on
    tap (kh // 2, kw // 2). The kernel is used as given: normalise it to sum 1 to keep brightness.

    Border (``padding``): "reflect" (mirror without repeating the edge pixel, as ``torch.nn.functional.pad``
    and scipy's "mirror"; needs kernel half-size < image size), "replicate" (repeat the edge),
    "circular" (wrap around) or "zeros". Every output pixel is observed.

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
        if padding not in _PADDINGS:
            raise InputError(
                f"Unknown Blur padding {padding!r}; choose one of {', '.join(map(repr, _PADDINGS))}."
            )
        self.padding = padding
        self.register_buffer("kernel", _check_kernel(kernel, "Blur"))

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
        shape = _image_shape(shape)
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

    def _linear_map(self, x: torch.Tensor, absolute: bool) -> torch.Tensor:
        b, c, h, w = x.shape
        kernel = self.kernel.to(device=x.device, dtype=x.dtype).flip(-2, -1)
        if absolute:
            kernel = kernel.abs()
        padded = F.pad(x.reshape(b * c, 1, h, w), self._pads(), mode=_PADDINGS[self.padding])
        return F.conv2d(padded, kernel[None, None]).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self._linear_map(x, absolute=False)

    def _abs_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._linear_map(x, absolute=True)


class Compose(Operator):
    r"""Chain of operators applied left to right: Compose(f1, f2, f3)(x) = f3(f2(f1(x))).

    So ``Compose(Blur.gaussian(1.0), Downsample(4))`` blurs first, then downsamples, and a Mask
    given after a Downsample is at the low resolution.

    Observation: an output pixel is observed iff every input pixel it depends on (with a non-zero
    weight) is observed. The missing pixels (1 - mask of f1) are pushed through each later operator
    with the absolute values of its weights; an output pixel that receives anything from them is
    missing, and the later operator's own mask (of a Mask) applies on top. A Blur spreads a hole by
    its kernel's half-size (so ``Blur.gaussian``'s ``size`` sets how far), a Downsample by its support.

    Args:
        operators: the operators, in the order they apply.

    Example:
        >>> import torch
        >>> from brgm_pyro.forward import Compose, Downsample, Mask
        >>> f = Compose(Mask.center_box(16, 4), Downsample(2, kernel="box"))
        >>> f(torch.rand(1, 1, 16, 16)).shape
        torch.Size([1, 1, 8, 8])
        >>> int(f.observed((1, 1, 16, 16)).sum())  # the 2x2 low-resolution pixels over the box are missing
        60
    """

    def __init__(self, *operators: Operator):
        super().__init__()
        if not operators:
            raise InputError(
                "Compose needs at least one operator; pass them in the order they apply, "
                "e.g. Compose(Blur.gaussian(1.0), Downsample(4))."
            )
        for operator in operators:
            if not isinstance(operator, Operator):
                raise InputTypeError(
                    f"Compose takes operators of brgm_pyro.forward, got {type(operator).__name__}; "
                    "wrap the function in an Operator subclass."
                )
        self.operators = nn.ModuleList(operators)

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        shape = _image_shape(shape)
        for operator in self.operators:
            shape = operator.output_shape(shape)
        return shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        for operator in self.operators:
            x = operator(x)
        return x

    def _abs_forward(self, x: torch.Tensor) -> torch.Tensor:
        for operator in self.operators:
            x = operator._abs_forward(x)
        return x

    @torch.no_grad()
    def observed(
        self,
        shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Observation mask of the chain (see the class docstring), broadcastable to ``output_shape(shape)``."""
        shape = _image_shape(shape)
        device = self._device(device)
        observed = None
        for operator in self.operators:
            own = operator.observed(shape, device=device, dtype=torch.float32)
            if observed is None:
                observed = own
            else:
                # Weights and the 0/1 mask are non-negative, so the push is exactly 0 iff nothing missing is read.
                reached = operator._abs_forward((1 - observed).expand(shape))
                observed = (reached == 0).to(torch.float32) * own
            shape = operator.output_shape(shape)
        return observed.to(dtype)
