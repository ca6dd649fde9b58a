"""``Mask``: the corruption of inpainting, y = m * x with m = 1 on the observed pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from brgm_pyro.errors import InputError
from brgm_pyro.forward import gram as grams
from brgm_pyro.forward.base import Operator, image_shape, shape_text

__all__ = ["Mask"]


class Mask(Operator):
    r"""Inpainting mask: y = m \odot x, with m = 1 (True) for observed pixels and 0 for missing ones.

    The mask broadcasts against the images: (H, W) or (1, H, W) for every image and channel,
    (C, H, W) per channel, (B, 1, H, W) or (B, C, H, W) per image of a batch of B. Missing pixels of y
    are 0 and unobserved: ``observed(shape)`` returns the mask itself.

    Structure: the adjoint is m * y, F F^T is the identity on the observed pixels, the leverage is
    the mask (a hole is exactly what the data leave unpinned), the task is "inpaint".

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
                f"Mask must have shape (H, W), (C, H, W) or (B, C, H, W), got {shape_text(mask.shape)}; "
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
        (height, width), (box_h, box_w) = pair(size, "size"), pair(box, "box")
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
        height, width = pair(size, "size")
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
        shape = image_shape(shape)
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


    @property
    def task(self) -> str:
        return "inpaint"

    @property
    def per_image(self) -> bool:
        return self.mask.dim() == 4 and self.mask.shape[0] > 1

    def tile(self, repeats: int) -> Mask:
        return Mask(self.mask.repeat(repeats, 1, 1, 1)) if self.per_image else self

    def select(self, index: int) -> Mask:
        return Mask(self.mask[index : index + 1]) if self.per_image else self

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.mask.to(device=y.device, dtype=y.dtype) * y

    def _make_gram(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> grams.Gram:
        return grams.EyeGram(self.observed(shape, device=device, dtype=dtype))

    def leverage(self, shape: Sequence[int]) -> torch.Tensor:
        """The mask: an observed pixel is pinned (leverage 1), a missing one is not (0)."""
        batch, channels, height, width = image_shape(shape)
        observed = self.observed(shape, device="cpu", dtype=torch.float64)
        return observed.expand(observed.shape[0], channels, height, width)


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int) or v < 1 for v in pair):
        raise InputError(f"Mask {name} must be a positive int or a pair (h, w) of them, got {value!r}.")
    return pair

