"""``Compose``: corruptions applied one after another, f = f_n o ... o f_1, with the structure of the chain."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.forward.base import Operator, image_shape

__all__ = ["Compose"]


class Compose(Operator):
    r"""Chain of operators applied left to right: Compose(f1, f2, f3)(x) = f3(f2(f1(x))).

    So ``Compose(Blur.gaussian(1.0), Downsample(4))`` blurs first, then downsamples, and a Mask
    given after a Downsample is at the low resolution.

    Observation: an output pixel is observed iff every input pixel it depends on (with a non-zero
    weight) is observed. The missing pixels (1 - mask of f1) are pushed through each later operator
    with the absolute values of its weights; an output pixel that receives anything from them is
    missing, and the later operator's own mask (of a Mask) applies on top. A Blur spreads a hole by
    its kernel's half-size (so ``Blur.gaussian``'s ``size`` sets how far), a Downsample by its support.

    Structure: the adjoint is f_1^T o ... o f_n^T; F F^T is a Kronecker product when every
    operator is separable (blur then downsample), else formed from f (``Operator.gram``).

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
        shape = image_shape(shape)
        for operator in self.operators:
            shape = operator.output_shape(shape)
        return shape

    def input_shape(self, shape: Sequence[int]) -> torch.Size:
        shape = image_shape(shape)
        for operator in reversed(self.operators):
            shape = operator.input_shape(shape)
        return shape

    @property
    def per_image(self) -> bool:
        return any(operator.per_image for operator in self.operators)

    def tile(self, repeats: int) -> Compose:
        return Compose(*(operator.tile(repeats) for operator in self.operators)) if self.per_image else self

    def select(self, index: int) -> Compose:
        return Compose(*(operator.select(index) for operator in self.operators)) if self.per_image else self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        for operator in self.operators:
            x = operator(x)
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        for operator in reversed(self.operators):
            y = operator.adjoint(y)
        return y

    def axis_matrices(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The product of its operators' axis matrices, when each has them."""
        shape = image_shape(shape)
        m_h = torch.eye(shape[2], dtype=torch.float64)
        m_w = torch.eye(shape[3], dtype=torch.float64)
        for operator in self.operators:
            axes = operator.axis_matrices(shape)
            if axes is None:
                return None
            m_h, m_w = axes[0] @ m_h, axes[1] @ m_w
            shape = operator.output_shape(shape)
        return m_h, m_w

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
        shape = image_shape(shape)
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
