"""Leverage of a corruption: the hole of a mask, about 1/k^2 per pixel for super-resolution by k."""

import pytest
import torch

import brgm_pyro as bp
from brgm_pyro.uncertainty.leverage import leverage, unpinned_pixels


def test_a_mask_pins_exactly_its_observed_pixels():
    f = bp.forward.Mask.center_box(16, 6)
    assert torch.equal(leverage(f, (1, 1, 16, 16)), f.mask[None, None].double())
    hole = unpinned_pixels(f, (1, 1, 16, 16))
    assert hole.dtype == torch.bool and int(hole.sum()) == 36


@pytest.mark.parametrize("kernel", ["bicubic", "box", "gaussian"])
@pytest.mark.parametrize("factor", [2, 4])
def test_separable_downsample_leverage_equals_the_dense_projection(kernel, factor):
    """The separable shortcut against the SVD of the dense matrix (Compose takes the dense route);
    the leverages sum to the rank, (16 / factor)^2, and none is pinned."""
    f = bp.forward.Downsample(factor, kernel)
    fast = leverage(f, (1, 1, 16, 16))
    matrix = f(torch.eye(256, dtype=torch.float64).reshape(256, 1, 16, 16)).reshape(256, -1).T
    dense = (torch.linalg.pinv(matrix) @ matrix).diagonal().reshape(1, 1, 16, 16)
    assert torch.allclose(fast, dense, atol=1e-6)
    assert float(fast.sum()) == pytest.approx((16 // factor) ** 2, rel=1e-6)
    assert bool(unpinned_pixels(f, (1, 1, 16, 16)).all())


def test_an_invertible_blur_pins_every_pixel_and_a_masked_blur_not_the_hole():
    blur = bp.forward.Blur(torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]]))
    assert torch.allclose(leverage(blur, (1, 1, 8, 8)), torch.ones(1, 1, 8, 8, dtype=torch.float64), atol=1e-6)
    masked = bp.forward.Compose(bp.forward.Mask.center_box(8, 4), bp.forward.Downsample(2, "box"))
    assert float(leverage(masked, (1, 1, 8, 8))[..., 2:6, 2:6].abs().max()) < 1e-9


def test_too_large_for_the_dense_matrix_gets_one_sentence():
    """A separable f of any size has its leverage per axis; a masked one above the dense limit does not."""
    assert leverage(bp.forward.Compose(bp.forward.Downsample(2, "box")), (1, 1, 128, 128)).shape == (1, 1, 128, 128)
    masked = bp.forward.Compose(bp.forward.Mask.center_box(128, 8), bp.forward.Downsample(2, "box"))
    with pytest.raises(ValueError, match="dense matrix is too large"):
        leverage(masked, (1, 1, 128, 128))
