"""Labelled grids (brgm_pyro.plotting.save_labelled_grid): the cells keep their exact pixels, the title, headings and
captions are drawn, and a flagged cell alone is framed and captioned in red."""

import numpy as np
import torch
from PIL import Image

from brgm_pyro import plotting

PAD = 2


def _red(block):
    return (block[..., 0] > 150) & (block[..., 1] < 80) & (block[..., 2] < 80)


def _dark(block):
    return block.max(-1) < 100


def test_a_labelled_grid_keeps_its_pixels_and_frames_the_flagged_cell(tmp_path):
    images = torch.rand(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    rows = [list(row) for row in images]
    captions = [["a0", "a1", "17.5 dB, misfits y"], ["b0", "b1", "b2"]]
    flagged = [[False, False, True], [False, False, False]]
    path = plotting.save_labelled_grid(tmp_path / "grid.png", rows, ["input", "baseline", "BRGM"], captions,
                                       title="inpaint", flagged=flagged, scale=4, pad=PAD)
    picture = np.asarray(Image.open(path).convert("RGB")).astype(int)
    line = plotting.LABEL_PX + 4
    head, cell = 2 * line, 32
    assert picture.shape == (head + PAD + 2 * (cell + PAD) + 2 * line, PAD + 3 * (cell + PAD), 3)
    for i in range(2):
        for j in range(3):
            top, left = head + PAD + i * (cell + PAD + line), PAD + j * (cell + PAD)
            expected = (images[i, j, 0].repeat_interleave(4, 0).repeat_interleave(4, 1) * 255).round().int().numpy()
            block = picture[top : top + cell, left : left + cell]
            assert np.array_equal(block[..., 0], expected) and np.array_equal(block[..., 2], expected)
            caption = picture[top + cell + 1 : top + cell + line, left : left + cell]
            assert _dark(caption).any() or _red(caption).any()  # every cell has its caption
            frame = np.concatenate([picture[top - 2 : top, left : left + cell].reshape(-1, 3),  # above and below
                                    picture[top + cell : top + cell + 2, left : left + cell].reshape(-1, 3)])
            assert _red(frame).all() == flagged[i][j] and _red(frame).any() == flagged[i][j]
            assert _red(caption).any() == flagged[i][j]
    assert _dark(picture[:line]).any() and _dark(picture[line:head]).any()  # the title and the column headings
