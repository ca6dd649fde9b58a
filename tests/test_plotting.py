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


def test_the_overview_is_labelled_and_frames_the_map_that_misfits(tmp_path):
    from conftest import sample_images, tiny_generator

    import brgm_pyro as bp
    from brgm_pyro.fit import FitCheck
    from brgm_pyro.forward import Mask

    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    x = sample_images(G, 2, seed=2)
    f = Mask.center_box(16, 6)
    post = bp.sample_posterior(f(x), f, G, "svi", 3, perceptual=None, map_schedule=bp.MAPSchedule(steps=2), steps=2,
                               progress=False)
    fit = FitCheck(rmse=torch.tensor([0.01, 0.5]), allowed=torch.tensor([0.1, 0.1]))
    files = plotting.save_uncertainty_maps(post, tmp_path, ["a", "b"], truth=x, fit=fit)
    line, cell, scale = plotting.LABEL_PX + 4, 128, 8
    for index, flagged in ((0, False), (1, True)):
        picture = np.asarray(Image.open(files[index]["overview"]).convert("RGB")).astype(int)
        assert picture.shape[:2] == (2 * line + PAD + cell + PAD + line, PAD + 5 * (cell + PAD))
        top, left = 2 * line + PAD, PAD + (cell + PAD)  # the MAP, second of five cells
        map_cell = picture[top : top + cell, left : left + cell, 0]
        expected = (post.map.image[index, 0].repeat_interleave(scale, 0).repeat_interleave(scale, 1) * 255)
        assert np.array_equal(map_cell, expected.round().int().numpy())
        assert _red(picture[top - 2 : top, left : left + cell]).all() == flagged
        assert _red(picture).any() == flagged
        for column in (1, 2):  # the PSNR under the MAP and under the mean
            under = picture[top + cell + 1 : top + cell + line, PAD + column * (cell + PAD) :][:, :cell]
            assert _dark(under).any() or _red(under).any()
