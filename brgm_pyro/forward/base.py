"""The operator contract, ``Operator``, what every corruption f of this package is, and ``Identity``.

An operator is a linear ``torch.nn.Module`` on images (B, C, H, W) that carries its own structure,
as deepinv's physics do, so that the layers above ask it instead of testing its class:

    f(x)                 F x                                   (forward; checks x first)
    f.adjoint(y)         F^T y                                 <f(a), b> = <a, f.adjoint(b)>
    f.observed(shape)    1 where an output depends only on observed input pixels (a likelihood's pixels)
    f.observe(y)         y with its unobserved entries set to 0: what a hole holds never matters
    f.gram(shape)        F F^T on the observed outputs (``brgm_pyro.forward.gram``): solves, log-densities
    f.leverage(shape)    diag(F^+ F): how much of each clean pixel the data determine
    f.task               the task family a calibration is made for ("inpaint", "superres-x4"), or None
    f.noise_sigma        the std of the noise f's own noise model adds, or None (a deepinv physics has one)
    f.tile(k)            the same f for a batch repeated k times (one mask per image stays that image's)
    f.select(i)          the same f for image i of the batch alone

The base class gives the structure of any linear operator from ``forward`` alone: the adjoint by
autograd, F F^T from its dense matrix for small images and by conjugate gradients and Lanczos for
large ones, the leverage from the dense matrix. The operators of this package override these with
their exact forms (a mask's F F^T is the identity on its observed pixels, a separable one's is a
Kronecker product, a circular blur's is diagonal in Fourier space).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import index

import torch
from torch import nn

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.forward import gram as grams

__all__ = ["MAX_DENSE_PIXELS", "Identity", "Operator", "image_shape", "shape_text"]

MAX_DENSE_PIXELS = 4096
"""Largest image (C H W values) whose operator matrix is formed densely (F F^T, leverage)."""


def shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def image_shape(shape: Sequence[int]) -> torch.Size:
    """Validate an image shape (B, C, H, W) and return it as a torch.Size."""
    shape = tuple(shape)
    if len(shape) != 4 or any(not hasattr(s, "__index__") or index(s) < 1 for s in shape):
        raise InputError(
            f"Expected an image shape (B, C, H, W) of four positive sizes, got {shape_text(shape)}; "
            "add the missing batch or channel dimension."
        )
    return torch.Size(index(s) for s in shape)


class Operator(nn.Module):
    """A linear corruption operator f on images (B, C, H, W); the base of the operators of this package.

    Subclasses implement ``forward`` (calling ``self.check(x)`` first) and override the structure
    they know exactly (module notes); the defaults are those of an operator that keeps the image
    size and observes every pixel, with the adjoint by autograd and F F^T from ``forward``.
    ``linear`` is True: an operator that is not linear sets it False and gets no structure.
    """

    linear = True

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        """Shape of f(x) for x of ``shape`` (B, C, H, W); raises InputError if f cannot apply to it."""
        return image_shape(shape)

    def input_shape(self, shape: Sequence[int]) -> torch.Size:
        """Shape of the clean images x whose f(x) has ``shape`` (the smallest, for a resampling f)."""
        return image_shape(shape)

    @property
    def task(self) -> str | None:
        """The task family a calibration is made for (``brgm_pyro.uncertainty.conformal``), None if none."""
        return None

    @property
    def per_image(self) -> bool:
        """Whether f treats the images of a batch differently (one mask per image)."""
        return False

    @property
    def noise_sigma(self) -> float | None:
        """The std of the Gaussian noise that f's own noise model adds to f(x), where f carries one (a
        deepinv physics): a problem's default sigma_pixel. None here."""
        return None

    def tile(self, repeats: int) -> Operator:
        """f for the batch repeated ``repeats`` times, ``x.repeat(repeats, 1, 1, 1)``."""
        return self

    def select(self, index: int) -> Operator:
        """f for image ``index`` of the batch alone (a batch of one)."""
        return self

    def check(self, x: torch.Tensor) -> torch.Size:
        """Validate the input images ``x`` (a floating-point (B, C, H, W) tensor); return the output shape."""
        if not isinstance(x, torch.Tensor):
            raise InputTypeError(
                f"Expected the images as a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor."
            )
        if x.dim() != 4:
            raise InputError(
                f"Expected images of shape (B, C, H, W), got a {x.dim()}-D tensor of shape "
                f"{shape_text(x.shape)}; add the batch/channel dimensions, e.g. x[None] for one image."
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

    def observe(self, y: torch.Tensor) -> torch.Tensor:
        """y with its unobserved entries set to 0, as a Mask sets a hole: what y holds there never
        enters a result. Applied once where a problem is prepared."""
        observed = self.observed(self.input_shape(y.shape), device=y.device, dtype=y.dtype)
        return y * observed

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """F^T y for y of the output's shape: here by autograd (the vector-Jacobian product of a
        linear f), which subclasses replace with the exact adjoint."""
        probe = torch.zeros(self.input_shape(y.shape), device=y.device, dtype=y.dtype, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self(probe), probe, grad_outputs=y)
        return grad

    def _abs_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply |f|, the operator with the absolute values of its weights (pushes masks in Compose).

        The default ``self(x)`` is right for operators whose weights are non-negative.
        """
        return self(x)

    def axis_matrices(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(M_H, M_W), float64, with f(x) = M_H x M_W^T for every image and channel, when f is
        separable so; None otherwise (the default)."""
        return None

    def gram(self, shape: Sequence[int], device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> grams.Gram:
        """F F^T on the observed outputs of f for clean images of ``shape``, cached per shape,
        device and dtype (``brgm_pyro.forward.gram``): Kronecker where f is separable, else dense
        up to ``MAX_DENSE_PIXELS`` values per image, else conjugate gradients and Lanczos."""
        shape = image_shape(shape)
        if not self.per_image:  # one structure serves any batch
            shape = torch.Size((1, *shape[1:]))
        device = self._device(device)
        key = (tuple(shape), device, dtype)
        cache = self.__dict__.setdefault("_gram_cache", {})
        if key not in cache:
            cache[key] = self._make_gram(shape, device, dtype)
        return cache[key]

    def _make_gram(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> grams.Gram:
        observed = self.observed(shape, device=device, dtype=dtype)
        axes = self.axis_matrices(shape)
        if axes is not None and bool((observed == 1).all()):
            return grams.KroneckerGram(*axes, dtype=dtype, device=device)
        out = self.output_shape(shape)
        if out[1] * out[2] * out[3] <= MAX_DENSE_PIXELS:
            return grams.DenseGram.of(self, shape, observed, device, dtype)
        return grams.IterativeGram(self, shape, observed)

    def leverage(self, shape: Sequence[int]) -> torch.Tensor | None:
        """diag(F^+ F) per clean pixel, (1 or B, C, H, W) float64 in [0, 1], from f's dense matrix
        (observed outputs only) for images of up to ``MAX_DENSE_PIXELS`` values; None above, where
        it is not known (``brgm_pyro.uncertainty.leverage``)."""
        shape = image_shape(shape)
        axes = self.axis_matrices(shape)
        if axes is not None and bool((self.observed(shape, device="cpu") == 1).all()):
            rows, cols = (grams.projection_diagonal(m) for m in axes)
            return (rows[:, None] * cols[None, :]).expand(1, shape[1], shape[2], shape[3])
        batch, channels, height, width = shape
        size = channels * height * width
        if size > MAX_DENSE_PIXELS:
            return None
        images = batch if self.per_image else 1
        observed = self.observed((images, channels, height, width), device="cpu", dtype=torch.float64)
        matrices = grams.dense_matrix(self, (images, channels, height, width), observed, torch.device("cpu"),
                                      torch.float64)
        return torch.stack([grams.projection_diagonal(m) for m in matrices]).reshape(images, channels, height, width)


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

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def axis_matrices(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, height, width = image_shape(shape)
        return torch.eye(height, dtype=torch.float64), torch.eye(width, dtype=torch.float64)
