"""`brgm calibrate` on a tiny prior, then `brgm sample` with its calibration: written, used, refused where it does not hold."""

import json

import numpy as np
import pytest
import torch

from brgm_pyro import io
from brgm_pyro.checkpoints import save_generator
from brgm_pyro.cli import main
from brgm_pyro.forward import Mask
from brgm_pyro.stylegan2 import StyleGAN2Generator

TINY = dict(resolution=16, channels=1, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
QUICK = ["--steps", "3", "--method", "svi", "--svi-steps", "3", "--perceptual", "none", "--sigma-reach", "0.05", "--quiet"]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny prior, 11 clean validation images, one inpainting input, and `brgm calibrate` run on them."""
    folder = tmp_path_factory.mktemp("calibrate")
    G = StyleGAN2Generator(**TINY, seed=0)
    save_generator(G, folder / "tiny.safetensors")
    clean = G.sample(12, seed=2)
    for i in range(11):
        io.write_image(folder / f"val{i:02d}.png", clean[i])
    mask = Mask.center_box(16, 6)
    io.write_image(folder / "mask.png", mask.mask.reshape(16, 16).float())
    io.write_image(folder / "new.png", mask(clean[11:])[0])
    io.write_image(folder / "new_clean.png", clean[11])
    argv = ["calibrate", *sorted(map(str, folder.glob("val*.png"))), "--generator", str(folder / "tiny.safetensors"),
            "--task", "inpaint", "--free-form", "--num-samples", "4", "--out", str(folder / "cal.json"), *QUICK]
    return folder, argv, main(argv)


def _sample(folder, out, *options):
    return main(["sample", str(folder / "new.png"), "--generator", str(folder / "tiny.safetensors"), "--task",
                 "inpaint", "--mask", str(folder / "mask.png"), "--num-samples", "4", "--out", str(out),
                 *QUICK, *map(str, options)])


def test_calibrate_writes_a_calibration_that_sample_uses_and_says_so(calibrated, tmp_path, capsys):
    folder, _, code = calibrated
    assert code == 0
    record = json.loads((folder / "cal.json").read_text())["calibration"]["inpaint"]
    assert record["images"] == 11 and record["min_samples"] == 4 and record["settings"]["model"] == "reach"
    assert len(list((folder / "cal.json.scores").iterdir())) == 11
    out = tmp_path / "with"
    assert _sample(folder, out, "--calibration", folder / "cal.json", "--truth", folder / "new_clean.png") == 0
    image = json.loads((out / "brgm.json").read_text())["images"][0]
    assert image["intervals"]["used"] == "calibrated" and "11 validation images" in image["intervals"]["note"]
    assert set(image["calibration"]["interval_coverage"]) == {"raw", "calibrated"}
    with np.load(out / "new_interval.npz") as saved:
        assert float(saved["level"]) == 0.9
        assert {"raw_lower", "raw_upper", "calibrated_lower", "calibrated_upper"} <= set(saved.files)
        assert saved["calibrated_upper"].shape == (1, 16, 16)
        assert not np.array_equal(saved["raw_upper"], saved["calibrated_upper"])
    out = tmp_path / "without"
    assert _sample(folder, out, "--calibration", "none", "--level", "0.8") == 0
    image = json.loads((out / "brgm.json").read_text())["images"][0]
    assert image["intervals"]["used"] == "raw" and image["intervals"]["level"] == 0.8
    with np.load(out / "new_interval.npz") as saved:
        assert set(saved.files) == {"level", "raw_lower", "raw_upper"}


def test_a_second_calibration_of_the_task_is_refused_and_other_tasks_get_one_line(calibrated, tmp_path, capsys):
    folder, argv, _ = calibrated
    capsys.readouterr()
    before = (folder / "cal.json").read_text()
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "already holds a calibration for inpaint; pass --replace" in error and error.count("\n") == 1
    assert (folder / "cal.json").read_text() == before
    low = tmp_path / "low.png"
    io.write_image(low, torch.rand(1, 4, 4))
    code = main(["sample", str(low), "--generator", str(folder / "tiny.safetensors"), "--task", "superres",
                 "--calibration", str(folder / "cal.json"), "--out", str(tmp_path / "o"), *QUICK])
    error = capsys.readouterr().err
    assert code == 2 and "holds calibrations for inpaint, not for superres-x4" in error
    assert not (tmp_path / "o").exists()
    code = main(["calibrate", str(folder / "val00.png"), "--generator", str(folder / "tiny.safetensors"),
                 "--task", "inpaint", "--out", str(tmp_path / "c.json"), *QUICK])
    assert code == 2 and "needs either --mask MASK.png (white = observed) or --free-form" in capsys.readouterr().err
    code = _sample(folder, tmp_path / "lvl", "--level", "1.5")
    assert code == 2 and "--level: expected a level strictly between 0 and 1" in capsys.readouterr().err
