import pytest

import brgm_pyro as bp
from brgm_pyro.checkpoints import registered_priors
from brgm_pyro.cli import main


@pytest.mark.parametrize(
    "name", ["fashion-mnist-32", "fashion-mnist-32-200kimg", "fashion-mnist-32-794kimg", "fashion-mnist-32-pl-748kimg"]
)
def test_shipped_prior_loads_and_generates(name):
    assert name in registered_priors()
    G = bp.load_generator(name)
    assert (G.resolution, G.channels) == (32, 1)
    assert G.card["name"] == name and G.card["kimg"] > 0 and G.card["sigma_reach"] > 0
    assert {"sigma_pixel", "sigma_percept", "kappa"} == set(G.card["params"]) and G.card["schedule"]["steps"] > 0
    x = G.sample(4, seed=0)
    assert x.shape == (4, 1, 32, 32) and x.min() >= 0 and x.max() <= 1 and x.std() > 0.05
    assert registered_priors()[name].stat().st_size < 25e6


def test_the_default_prior_is_the_wider_generator():
    """The default is the run with 96 channels per layer (docs/results/priors.md): it samples better
    than the 64-channel run at 200 kimg and reconstructs better than it at 794 kimg."""
    default = bp.load_generator("fashion-mnist-32")
    small, longer = bp.load_generator("fashion-mnist-32-200kimg"), bp.load_generator("fashion-mnist-32-794kimg")
    assert small.config == longer.config and default.config["channel_max"] > small.config["channel_max"]
    assert small.card["kimg"] == 200 and longer.card["kimg"] > 790
    fid = {g: g.card["quality"]["fid_samples_vs_test"] for g in (default, small, longer)}
    assert fid[longer] < fid[default] < fid[small]
    # the shipped sigma_reach: how far the prior's best G(w) stays from held-out images
    assert default.card["sigma_reach"] < small.card["sigma_reach"]


def test_the_path_length_regularised_prior_continues_the_default_run():
    """``fashion-mnist-32-pl-748kimg`` is the default's run trained on with path-length regularisation
    (docs/results/priors.md, *Which prior reconstructs best*): same architecture, more images, better samples, and its card says so."""
    default, regularised = bp.load_generator("fashion-mnist-32"), bp.load_generator("fashion-mnist-32-pl-748kimg")
    assert regularised.config == default.config
    assert regularised.card["kimg"] > default.card["kimg"] and regularised.card["train_config"]["pl_weight"] == 2
    assert "path-length" in regularised.card["recipe"] and "path-length" not in default.card["recipe"]
    quality = {g: g.card["quality"]["fid_samples_vs_test"] for g in (default, regularised)}
    assert quality[regularised] < quality[default]


def test_demo_refuses_to_replace_earlier_outputs(tmp_path, capsys):
    """(The demo itself runs from the installed wheel, in tests/test_wheel.py.)"""
    out = tmp_path / "demo"
    out.mkdir()
    (out / "metrics.md").write_text("an earlier run")
    assert main(["demo", "--steps", "1", "--out", str(out), "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "metrics.md").read_text() == "an earlier run" and sorted(p.name for p in out.iterdir()) == ["metrics.md"]


def test_the_demo_labels_its_grids_and_flags_reconstructions_that_miss_their_input(tmp_path, capsys):
    """A random 32 px prior with 2 MAP steps misses the observed pixels: metrics.json records the fit of every
    image, metrics.md and the notes name each misfit, and its grid frames exactly those BRGM cells in red. The
    progress bar names the task."""
    import json

    import numpy as np
    from conftest import tiny_generator
    from PIL import Image

    from brgm_pyro import plotting
    from brgm_pyro.demo import TASKS, run_demo

    generator = bp.save_generator(tiny_generator(32), tmp_path / "random.safetensors")
    result = run_demo(tmp_path / "out", generator=str(generator), steps=2, tasks=TASKS[2:3], progress=True)
    assert "demo: inpaint-center" in capsys.readouterr().err
    fits = result["fit"]["inpaint-center"]
    assert len(fits) == 8 and all(set(r) == {"rmse_observed", "rmse_allowed", "fits"} for r in fits.values())
    misfits = [name for name, r in fits.items() if not r["fits"]]
    assert misfits and all(fits[n]["rmse_observed"] > fits[n]["rmse_allowed"] for n in misfits)
    assert [note.split(":")[0] for note in result["notes"]] == [f"inpaint-center {n}" for n in misfits]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["notes"] == result["notes"]
    assert (tmp_path / "out" / "metrics.md").read_text().count("\nNote: inpaint-center ") == len(misfits)
    picture = np.asarray(Image.open(tmp_path / "out" / "inpaint-center.png").convert("RGB")).astype(int)
    line, cell, pad = plotting.LABEL_PX + 4, 128, 2
    for i, name in enumerate(fits):
        top, left = 2 * line + pad + i * (cell + pad + line), pad + 2 * (cell + pad)  # the BRGM column
        above = picture[top - 2 : top, left : left + cell]
        red = (above[..., 0] > 150) & (above[..., 1] < 80)
        assert red.all() == (name in misfits) and red.any() == (name in misfits)
    assert picture[:line].max(-1).min() < 100  # the title is drawn
