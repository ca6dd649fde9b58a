"""Free-form masks: seeded, stroke-shaped, of the advertised size."""

import pytest
import torch

from brgm_pyro.forward import Mask
from brgm_pyro.forward.free_form import free_form_mask


def test_the_seed_fixes_the_mask_and_different_seeds_differ():
    a, b = free_form_mask(32, seed=3), free_form_mask(32, seed=3)
    assert isinstance(a, Mask) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, free_form_mask(32, seed=4).mask)


def test_hole_fractions_over_seeds_are_those_the_docstring_states():
    fractions = torch.tensor([1 - float(free_form_mask(32, seed=s).mask.mean()) for s in range(200)])
    assert 0.17 < float(fractions.mean()) < 0.25
    assert float(fractions.quantile(0.05)) > 0.05 and float(fractions.quantile(0.95)) < 0.4


def test_strokes_are_thick_and_connected_not_scattered_pixels():
    """A brush stroke leaves few holes whose 4-neighbours are all observed (speckle would)."""
    for seed in range(20):
        missing = free_form_mask(32, seed=seed).mask == 0
        padded = torch.nn.functional.pad(missing.float()[None, None], (1, 1, 1, 1))[0, 0]
        neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        isolated = missing & (neighbours == 0)
        assert int(isolated.sum()) == 0, seed


def test_bad_size_gets_one_sentence():
    with pytest.raises(ValueError, match="at least 4 pixels"):
        free_form_mask(2, seed=0)
    with pytest.raises(ValueError, match="integer image size"):
        free_form_mask(32.0, seed=0)
