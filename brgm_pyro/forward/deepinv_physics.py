"""deepinv's physics as corruptions f: ``PhysicsOperator`` gives a ``deepinv.physics.LinearPhysics`` the
structure of an ``Operator``; ``as_operator`` is the one place a deepinv physics is turned into an f.

    f = as_operator(physics, image_shape=(1, 32, 32))   # PhysicsOperator; a non-linear physics: NonlinearPhysics
    f(x) == physics.A(x)                                # noise-free; deepinv's physics(x) adds its noise
    f.adjoint(y) == physics.A_adjoint(y)

Its structure, from the physics (deepinv is imported only where a physics is given):

- observed outputs: deepinv's y is A(x) plus noise on every output, except where a final
  ``Inpainting`` (alone or last of a composition) has mask 0 (deepinv's mask: 1 = kept); an output
  that reads masked input pixels through a later operator is still a measurement of A(x).
- F F^T (``gram``), exact in each form: the identity on the kept pixels of an ``Inpainting`` with a
  0/1 mask; diagonal in Fourier space where F F^T is circulant on the measurement grid (a ``BlurFFT``,
  a ``Blur`` or a ``Downsampling`` with circular padding, whatever their filter, and their
  compositions: its eigenvalues are the DFT of F F^T's response to a unit measurement); a Kronecker
  product where A is separable, A x = M_H x M_W^T for every image and channel (``axis_matrices``:
  a ``Downsampling`` or ``Blur`` whose filter is an outer product); else the base class's (dense for
  small images, conjugate gradients and Lanczos for large ones). Each structure is read off A on
  unit images and kept only where it reproduces A (A A^T) on a random image to float64 precision
  (``STRUCTURE_TOLERANCE``): deepinv computes its filters in float32, whose rounding breaks an
  outer product of two Gaussians at 1e-7, and such a filter gets the dense form, which is exact.
- task: "inpaint" for an ``Inpainting`` with a 0/1 mask; for a ``Downsampling``, the task of the
  ``Downsample`` it equals on the images (checked on a random image), else None: deepinv's bicubic
  filter samples another phase and border than Pillow's (docs/results/deepinv.md), so a calibration
  made for ``Downsample(4)`` does not hold for it.
- ``noise_sigma``: the std of a ``GaussianNoise`` noise model with one sigma, the default
  sigma_pixel of a problem whose params are not given (``brgm_pyro.problem``).

Stacked physics (``physics.stack``) give several measurements and are refused with one sentence;
compose physics with ``*`` instead. A physics whose tensors hold one entry per image (a mask or a
filter per image, leading dimension > 1) treats the images differently (``per_image``).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence

import torch
from torch import nn

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.forward import gram as grams
from brgm_pyro.forward.base import MAX_DENSE_PIXELS, Operator, image_shape, shape_text
from brgm_pyro.forward.resample import Downsample

__all__ = ["NonlinearPhysics", "PhysicsOperator", "as_operator", "is_physics"]

STRUCTURE_TOLERANCE = 1e-10
"""A structure read off A (separable, circulant F F^T) is kept when it reproduces A (or A A^T) on a random
image in float64 within this fraction of the largest output: exact up to the arithmetic's rounding."""

SAME_OPERATOR_TOLERANCE = 1e-6
"""A Downsampling has the task of our Downsample when their outputs on a random image differ by less."""


def is_physics(f: object) -> bool:
    """Whether f is a deepinv physics (deepinv is imported by whoever built one, so never here)."""
    deepinv = sys.modules.get("deepinv")
    return deepinv is not None and isinstance(f, deepinv.physics.Physics)


def as_operator(f: nn.Module, image_shape: Sequence[int] | None = None) -> nn.Module:
    """f as the corruption of a problem: a deepinv ``LinearPhysics`` as a :class:`PhysicsOperator`, another
    deepinv physics as a :class:`NonlinearPhysics` (no structure: the models that need none), anything
    else unchanged. ``image_shape`` (C, H, W) is the clean images' shape, where known."""
    if not is_physics(f):
        return f
    import deepinv

    if isinstance(f, deepinv.physics.forward.StackedPhysics):
        raise InputError(
            f"deepinv's stacked physics ({type(f).__name__}) gives several measurements, and brgm-pyro takes one y; "
            "pass one physics, or compose physics with * (A2 * A1 applies A1 first)."
        )
    if isinstance(f, deepinv.physics.LinearPhysics):
        return PhysicsOperator(f, image_shape)
    return NonlinearPhysics(f)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()).rstrip(".")


def _noise_sigma(physics: nn.Module) -> float | None:
    import deepinv

    noise = getattr(physics, "noise_model", None)
    if isinstance(noise, deepinv.physics.GaussianNoise) and noise.sigma.numel() == 1 and float(noise.sigma) > 0:
        return float(noise.sigma)
    return None


class NonlinearPhysics(nn.Module):
    """A deepinv physics that is not a ``LinearPhysics``, as f(x) = physics.A(x) (noise-free): no
    adjoint, no F F^T, every output observed; the models that need no structure run with it."""

    def __init__(self, physics: nn.Module):
        super().__init__()
        self.physics = physics

    def extra_repr(self) -> str:
        return f"physics={type(self.physics).__name__}"

    @property
    def noise_sigma(self) -> float | None:
        """The std of the physics' Gaussian noise model, where it has one sigma; else None."""
        return _noise_sigma(self.physics)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.physics.A(x)


class CirculantGram(grams.FourierGram):
    """F F^T = Q^H diag(lambda) Q, Q the unitary 2-D DFT of the measurement grid, from its eigenvalues
    lambda (h, w) (``FourierGram`` computes them from a blur kernel)."""

    def __init__(self, eigenvalues: torch.Tensor) -> None:
        self.eigenvalues = eigenvalues


class PhysicsOperator(Operator):
    r"""A deepinv ``LinearPhysics`` as an ``Operator``: f(x) = A x = ``physics.A(x)``, F^T y = ``physics.A_adjoint(y)``.

    The structure comes from the physics (module notes): its observed outputs, F F^T, the leverage,
    the task and the noise level of its Gaussian noise model. Float64 inputs (the dense matrices of
    F F^T and of the leverage) run on a float64 copy of the physics, whose float32 filters are then
    the same numbers. The structure is read once: a physics changed afterwards (``physics.update``)
    needs a new adapter, which ``bp.reconstruct`` and ``BRGM`` make at every call.

    Args:
        physics: a ``deepinv.physics.LinearPhysics`` whose A maps images (B, C, H, W) to measurements
            (B, c, h, w).
        image_shape: (C, H, W) of the clean images, where known (``input_shape`` then needs no
            adjoint); else the physics' adjoint gives it.

    Example:
        >>> import torch, deepinv
        >>> from brgm_pyro.forward.deepinv_physics import PhysicsOperator
        >>> mask = torch.ones(1, 8, 8); mask[:, 2:5, 2:5] = 0
        >>> f = PhysicsOperator(deepinv.physics.Inpainting(img_size=(1, 8, 8), mask=mask))
        >>> int(f.observed((1, 1, 8, 8)).sum()), f.task, f.per_image
        (55, 'inpaint', False)
    """

    def __init__(self, physics: nn.Module, image_shape: Sequence[int] | None = None, repeats: int = 1):
        super().__init__()
        import deepinv

        if not isinstance(physics, deepinv.physics.LinearPhysics):
            raise InputTypeError(
                f"PhysicsOperator takes a deepinv.physics.LinearPhysics, got {type(physics).__name__}; "
                "pass a non-linear physics to bp.reconstruct directly (brgm_pyro.forward.as_operator)."
            )
        if image_shape is not None and (len(image_shape) != 3 or any(int(s) < 1 for s in image_shape)):
            raise InputError(f"image_shape must be (C, H, W), got {tuple(image_shape)}; drop the batch dimension.")
        self.physics = physics
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.repeats = repeats

    def extra_repr(self) -> str:
        shape = "" if self.image_shape is None else f", image_shape={self.image_shape}"
        return f"physics={type(self.physics).__name__}{shape}"

    # ------------------------------------------------------------------ the physics and its pieces

    def _parts(self) -> list[nn.Module]:
        """The physics of the chain in the order they apply (one for a physics that is not a composition)."""
        import deepinv

        if isinstance(self.physics, deepinv.physics.forward.ComposedPhysics):
            return list(self.physics.physics_list)
        return [self.physics]

    def _final_masks(self) -> list[torch.Tensor]:
        """The masks of the Inpainting physics that apply last (the final run of the chain)."""
        import deepinv

        masks = []
        for part in reversed(self._parts()):
            if not isinstance(part, deepinv.physics.Inpainting) or part.mask is None:
                break
            masks.append(part.mask)
        return masks

    def _binary_inpainting(self) -> bool:
        """Whether the physics is one Inpainting with a 0/1 mask (A = diag(m), the structure of our Mask)."""
        import deepinv

        return (isinstance(self.physics, deepinv.physics.Inpainting) and self.physics.mask is not None
                and bool(((self.physics.mask == 0) | (self.physics.mask == 1)).all()))

    def _physics_for(self, x: torch.Tensor) -> nn.Module:
        """The physics on x's device and dtype: itself, or a cached copy (float64 for the dense matrices)."""
        tensor = next((t for t in self.physics.buffers() if t.is_floating_point()), None)
        if tensor is None or (tensor.dtype == x.dtype and tensor.device == x.device):
            return self.physics
        cache = self.__dict__.setdefault("_copies", {})
        key = (x.device, x.dtype)
        if key not in cache:
            complex_dtype = (torch.ones(1, dtype=x.dtype) * 1j).dtype
            cache[key] = copy.deepcopy(self.physics).to(x.device)._apply(
                lambda t: t.to(x.dtype) if t.is_floating_point() else t.to(complex_dtype) if t.is_complex() else t
            )
        return cache[key]

    def _own_adjoint(self) -> bool:
        """Whether the physics can apply its adjoint (a bare LinearPhysics needs its A_adjoint or img_size)."""
        import deepinv

        bare = type(self.physics).A_adjoint is deepinv.physics.LinearPhysics.A_adjoint
        return not bare or self.physics.A_adj is not None or self.physics.img_size is not None

    def _run(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """``physics.A`` or ``physics.A_adjoint`` of z, one chunk of the repeated batch at a time."""
        method = getattr(self._physics_for(z), name)
        if self.repeats == 1:
            return method(z)
        return torch.cat([method(chunk) for chunk in z.chunk(self.repeats)])

    # ------------------------------------------------------------------ the operator

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        batch, channels, height, width = image_shape(shape)
        if self.image_shape is not None and (channels, height, width) != self.image_shape:
            raise InputError(
                f"deepinv's {type(self.physics).__name__} was given for images {shape_text(self.image_shape)}, not "
                f"{shape_text((channels, height, width))}; build the physics for the images' size."
            )
        cache = self.__dict__.setdefault("_output_shapes", {})
        key = (channels, height, width)
        if key not in cache:
            probe = torch.zeros(self.repeats, channels, height, width, device=self._device(None))
            try:
                with torch.no_grad():
                    out = self._run("A", probe)
            except Exception as err:  # noqa: BLE001  (deepinv raises what its code raises; one sentence here)
                raise InputError(
                    f"deepinv's {type(self.physics).__name__} cannot apply to images {shape_text(key)} "
                    f"({_one_line(err)}); build the physics for the images' size and channels."
                ) from None
            if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.is_complex():
                kind = type(out).__name__ if not isinstance(out, torch.Tensor) else f"shape {shape_text(out.shape)}"
                raise InputError(
                    f"deepinv's {type(self.physics).__name__} gives measurements of {kind}, and brgm-pyro's likelihoods "
                    "take real image-shaped measurements (B, C, h, w); use a physics whose A returns such a tensor."
                )
            cache[key] = tuple(out.shape[1:])
        return torch.Size((batch, *cache[key]))

    def input_shape(self, shape: Sequence[int]) -> torch.Size:
        batch, *measured = image_shape(shape)
        if self.image_shape is not None:
            return torch.Size((batch, *self.image_shape))
        if not self._own_adjoint():
            raise InputError(
                f"deepinv's {type(self.physics).__name__} does not say the images' shape (no adjoint, no img_size); "
                "pass image_shape=(C, H, W) to PhysicsOperator."
            )
        with torch.no_grad():
            probe = torch.zeros(self.repeats, *measured, device=self._device(None))
            return torch.Size((batch, *self._run("A_adjoint", probe).shape[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self._run("A", x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if not self._own_adjoint():
            return super().adjoint(y)
        return self._run("A_adjoint", y)

    @property
    def noise_sigma(self) -> float | None:
        """The std of the physics' Gaussian noise model where it has one sigma (the default sigma_pixel of a
        problem without params); None for no noise, another noise model or one sigma per image."""
        return _noise_sigma(self.physics)

    @property
    def per_image(self) -> bool:
        return any(t.dim() >= 4 and t.shape[0] > 1 for t in self.physics.buffers())

    def tile(self, repeats: int) -> PhysicsOperator:
        if not self.per_image:
            return self
        return PhysicsOperator(self.physics, self.image_shape, self.repeats * repeats)

    def select(self, index: int) -> Operator:
        if not self.per_image:
            return self
        return _OneImage(self, index)

    @property
    def task(self) -> str | None:
        import deepinv

        if self._binary_inpainting():
            return "inpaint"
        physics = self.physics
        if not isinstance(physics, deepinv.physics.Downsampling) or self.per_image:
            return None
        shape = self.image_shape or getattr(physics, "imsize", None)
        if shape is None or shape[1] % physics.factor or shape[2] % physics.factor:
            return None
        x = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        with torch.no_grad():
            y = self._physics_for(x).A(x)
            for kernel in ("bicubic", "bilinear", "box", "gaussian"):
                ours = Downsample(physics.factor, kernel)
                if ours.output_shape(x.shape) == y.shape and (ours(x) - y).abs().max() < SAME_OPERATOR_TOLERANCE:
                    return ours.task
        return None

    def observed(
        self,
        shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """1 where the output is a measurement: everywhere but where a final Inpainting's mask is 0
        (module notes); a 0/1 tensor broadcastable to ``output_shape(shape)``."""
        out = self.output_shape(shape)
        device = self._device(device)
        observed = torch.ones(1, 1, out[2], out[3], device=device, dtype=dtype)
        for mask in self._final_masks():
            kept = (mask != 0).to(device=device, dtype=dtype)
            kept = kept.reshape((1,) * (4 - kept.dim()) + tuple(kept.shape))
            if self.repeats > 1 and kept.shape[0] > 1:
                kept = kept.repeat(self.repeats, 1, 1, 1)
            observed = observed * kept
        return observed

    def _abs_forward(self, x: torch.Tensor) -> torch.Tensor:
        """|F| x from F's dense matrix for images of up to ``MAX_DENSE_PIXELS`` values; above, f(x), right
        for a physics with non-negative weights (the base class's assumption)."""
        batch, channels, height, width = x.shape
        if channels * height * width > MAX_DENSE_PIXELS:
            return self(x)
        images = batch if self.per_image else 1
        ones = torch.ones(1, device=x.device, dtype=torch.float64)
        matrices = grams.dense_matrix(self, (images, channels, height, width), ones, x.device, torch.float64)
        out = torch.einsum("bmn,bn->bm", matrices.abs().expand(batch, -1, -1), x.flatten(1).double())
        return out.reshape(self.output_shape(x.shape)).to(x.dtype)

    def axis_matrices(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(M_H, M_W) with A x = M_H x M_W^T for every image and channel, read off A on unit images and
        checked on a random image (within ``STRUCTURE_TOLERANCE``); None where A is not so."""
        _, channels, height, width = image_shape(shape)
        cache = self.__dict__.setdefault("_axis_cache", {})
        key = (channels, height, width)
        if key not in cache:
            cache[key] = None if self.per_image else self._probe_axes(channels, height, width)
        return cache[key]

    def _probe_axes(self, channels: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        out = self.output_shape((1, channels, height, width))
        if out[1] != channels:
            return None
        # f(E_ij) = M_H[:, i] M_W[:, j]^T for the unit image E_ij: a column of unit images through one
        # pixel (i0, j0) gives M_H up to a scale, a row gives M_W, and their crossing fixes the scale.
        i0, j0 = height // 2, width // 2
        units = torch.zeros(height + width, channels, height, width, dtype=torch.float64)
        units[torch.arange(height), :, torch.arange(height), j0] = 1
        units[height + torch.arange(width), :, i0, torch.arange(width)] = 1
        x = torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        with torch.no_grad():
            responses = self(units)[:, 0]
            crossing = responses[i0]
            if not crossing.abs().max() > 0:
                return None
            r0, c0 = divmod(int(crossing.abs().argmax()), crossing.shape[1])
            m_h = responses[:height, :, c0].T / crossing[r0, c0]
            m_w = responses[height:, r0, :].T
            y = self(x)
        error = (m_h @ x @ m_w.T - y).abs().max()
        if not error <= STRUCTURE_TOLERANCE * y.abs().max():
            return None
        return m_h, m_w

    def _make_gram(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> grams.Gram:
        if self._binary_inpainting():
            return grams.EyeGram(self.observed(shape, device=device, dtype=dtype))
        if not self.per_image and bool((self.observed(shape, device="cpu") == 1).all()):
            eigenvalues = self._circulant_eigenvalues(shape[1], shape[2], shape[3])
            if eigenvalues is not None:
                return CirculantGram(eigenvalues.to(device=device, dtype=dtype))
        return super()._make_gram(shape, device, dtype)

    def _circulant_eigenvalues(self, channels: int, height: int, width: int) -> torch.Tensor | None:
        """The eigenvalues (h, w), float64, of F F^T where it is circulant on the measurement grid (the DFT
        of its response to a unit measurement at the origin), checked on a random measurement; else None."""
        out = self.output_shape((1, channels, height, width))
        unit = torch.zeros(1, *out[1:], dtype=torch.float64)
        unit[:, :, 0, 0] = 1
        v = torch.rand(1, *out[1:], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        with torch.no_grad():
            response = self(self.adjoint(unit))[0, 0]
            eigenvalues = torch.fft.fft2(response).real
            expected = self(self.adjoint(v))
        circulant = torch.fft.ifft2(eigenvalues * torch.fft.fft2(v)).real
        if not (circulant - expected).abs().max() <= STRUCTURE_TOLERANCE * expected.abs().max():
            return None
        return eigenvalues.clamp_min(0)

    def leverage(self, shape: Sequence[int]) -> torch.Tensor | None:
        """The kept pixels for an Inpainting with a 0/1 mask (leverage 1 where kept, 0 in a hole); else
        the base class's."""
        if not self._binary_inpainting():
            return super().leverage(shape)
        _, channels, height, width = image_shape(shape)
        observed = self.observed(shape, device="cpu", dtype=torch.float64)
        return observed.expand(observed.shape[0], channels, height, width)


class _OneImage(Operator):
    """Image ``index`` of a per-image physics alone (``PhysicsOperator.select``): each image is applied at its
    place in a batch of zeros, and the output of that place kept. Right for any physics that treats the
    images of its batch apart, as deepinv's per-image masks and filters do."""

    def __init__(self, parent: PhysicsOperator, index: int) -> None:
        super().__init__()
        self.parent = parent
        self.index = index
        self.images = max(t.shape[0] for t in parent.physics.buffers() if t.dim() >= 4) * parent.repeats
        if not 0 <= index < self.images:
            raise InputError(f"image {index} is not in the physics' batch of {self.images}.")

    def _place(self, z: torch.Tensor) -> torch.Tensor:
        before = z.new_zeros(self.index, *z.shape[1:])
        after = z.new_zeros(self.images - self.index - 1, *z.shape[1:])
        return torch.cat([before, z, after])

    def _apply(self, method, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([method(self._place(z[b : b + 1]))[self.index : self.index + 1] for b in range(z.shape[0])])

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        return self.parent.output_shape(shape)

    def input_shape(self, shape: Sequence[int]) -> torch.Size:
        return self.parent.input_shape(shape)

    @property
    def task(self) -> str | None:
        return self.parent.task

    @property
    def noise_sigma(self) -> float | None:
        return self.parent.noise_sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self._apply(self.parent, x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._apply(self.parent.adjoint, y)

    def observed(
        self,
        shape: Sequence[int],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        observed = self.parent.observed((self.images, *image_shape(shape)[1:]), device=device, dtype=dtype)
        return observed[self.index : self.index + 1] if observed.shape[0] > 1 else observed

    def _make_gram(self, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> grams.Gram:
        if self.parent._binary_inpainting():
            return grams.EyeGram(self.observed(shape, device=device, dtype=dtype))
        return super()._make_gram(shape, device, dtype)
