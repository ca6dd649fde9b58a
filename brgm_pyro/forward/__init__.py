"""Corruption operators f of the forward model y = f(x): super-resolution, inpainting, blur, their chains.

Every operator is a linear, differentiable ``torch.nn.Module`` on images x of shape (B, C, H, W)
that works on the device and dtype of its input and carries its own structure (``Operator``,
in ``base``): its adjoint, its observed outputs, ``observe(y)``, F F^T for the posterior
(``gram``), its leverage, its task family, and ``tile`` for a repeated batch. The layers above
ask the operator; a user's own linear operator subclasses ``Operator`` and gets every piece of
structure from its ``forward`` alone.

    Downsample(factor, kernel)   resample.py   super-resolution by an integer factor (Pillow's kernels)
    Mask(mask)                   masks.py      inpainting, 1 = observed; free_form_mask: brush strokes
    Blur(kernel, padding)        blur.py       convolution at the image's size
    Compose(f1, f2, ...)         compose.py    f1 first, then f2, ...
    Identity()                   base.py
    as_operator(physics)         deepinv_physics.py   a deepinv LinearPhysics as an Operator (PhysicsOperator)

Bad values raise ``InputError`` and arguments of the wrong type ``InputTypeError``, each with one
sentence naming the problem and the fix; ``check(x)`` runs before any computation.
"""

from brgm_pyro.forward.base import MAX_DENSE_PIXELS, Identity, Operator
from brgm_pyro.forward.blur import Blur
from brgm_pyro.forward.compose import Compose
from brgm_pyro.forward.deepinv_physics import PhysicsOperator, as_operator
from brgm_pyro.forward.free_form import free_form_mask
from brgm_pyro.forward.masks import Mask
from brgm_pyro.forward.resample import Downsample

__all__ = [
    "MAX_DENSE_PIXELS", "Blur", "Compose", "Downsample", "Identity", "Mask", "Operator", "PhysicsOperator", "as_operator",
    "free_form_mask",
]
