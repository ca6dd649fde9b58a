"""`brgm sample`: posterior maps, NetCDF and JSON on a tiny generator; one-line errors that write nothing."""

import json
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

import brgm_pyro
from brgm_pyro import io
from brgm_pyro.checkpoints import save_generator
from brgm_pyro.cli import main
from brgm_pyro.forward import Downsample, Mask
from brgm_pyro.stylegan2 import StyleGAN2Generator

TINY = dict(resolution=16, channels=1, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
QUICK = ["--steps", "5", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny generator file, two clean images, their inpainting inputs with a mask, one 4 px input."""
    folder = tmp_path_factory.mktemp("inputs")
    G = StyleGAN2Generator(**TINY, seed=0)
    save_generator(G, folder / "tiny.safetensors")
    clean = G.sample(2, seed=1)
    mask = Mask.center_box(16, 6)
    io.write_image(folder / "mask.png", mask.mask.reshape(16, 16).float())
    for i, name in enumerate("ab"):
        io.write_image(folder / f"{name}_clean.png", clean[i])
        io.write_image(folder / f"{name}.png", mask(clean[i : i + 1])[0])
    io.write_image(folder / "low.png", Downsample(4)(clean[:1])[0])
    return folder


def _sample(files, out, *options):
    argv = ["sample", "--generator", str(files / "tiny.safetensors"), "--out", str(out), *map(str, options)]
    return main(argv)


def test_svi_inpainting_with_truth_writes_maps_netcdf_and_json(files, tmp_path, capsys):
    out = tmp_path / "out"
    inputs = [files / "a.png", files / "b.png", "--task", "inpaint", "--mask", files / "mask.png"]
    truth = ["--truth", files / "a_clean.png", files / "b_clean.png"]
    code = _sample(files, out, *inputs, *truth, "--num-samples", 6, "--method", "svi", "--svi-steps", 10, *QUICK)
    assert code == 0 and str(out) in capsys.readouterr().out
    kinds = ("reconstruction", "input", "reconstruction_corrupted", "mean", "std", "samples", "overview", "error")
    expected = {f"{n}_{k}.png" for n in "ab" for k in kinds} | {"a_posterior.nc", "b_posterior.nc", "brgm.json"}
    expected |= {"a_interval.npz", "b_interval.npz"}
    assert {p.name for p in out.iterdir()} == expected
    with Image.open(out / "a_std.png") as image:
        assert (image.mode, image.size) == ("RGB", (16, 16))
    summary = json.loads((out / "brgm.json").read_text())
    assert summary["command"] == "sample" and summary["complete"] is True
    assert summary["settings"]["sampling"] == {"method": "svi", "num_samples": 6, "options": {"steps": 10}}
    assert summary["settings"]["model"] == "auto" and summary["settings"]["sigma_reach"] == "auto"
    image = summary["images"][1]
    assert image["name"] == "b" and image["truth"].endswith("b_clean.png")
    calibration = image["calibration"]
    assert set(calibration["coverage"]) == {"0.5", "0.9", "0.95"}
    assert calibration["std_ratio_hole_observed"] > 0 and "psnr_map" in calibration
    assert image["posterior"]["mean_std"] > 0 and image["outputs"]["posterior"] == "b_posterior.nc"

    import arviz as az

    data = az.from_netcdf(out / "a_posterior.nc")
    assert data.posterior["image"].shape == (1, 6, 1, 1, 16, 16)
    assert data.attrs["method"] == "svi"


def test_sigma_reach_widens_the_maps_of_the_hole(files, tmp_path):
    inputs = [files / "a.png", "--task", "inpaint", "--mask", files / "mask.png", "--num-samples", 8, "--method", "svi", "--svi-steps", 5]
    std = {}
    for value in ("0", "0.2"):
        out = tmp_path / value
        assert _sample(files, out, *inputs, "--sigma-reach", value, *QUICK) == 0
        summary = json.loads((out / "brgm.json").read_text())
        assert ("reach_s" in summary["images"][0]["diagnostics"]) == (value != "0")
        std[value] = summary["images"][0]["posterior"]["mean_std"]
    assert std["0.2"] > std["0"] + 0.02


def test_nuts_superres_with_learned_noise(files, tmp_path):
    out = tmp_path / "out"
    options = ["--method", "nuts", "--num-samples", 3, "--num-chains", 2, "--warmup", 3, "--max-tree-depth", 2]
    code = _sample(files, out, files / "low.png", "--task", "superres", "--model", "learned-noise", *options, *QUICK)
    assert code == 0
    summary = json.loads((out / "brgm.json").read_text())
    [image] = summary["images"]
    assert "sigma_pixel" in image["posterior"] and "calibration" not in image
    assert {"divergences", "max_r_hat", "mean_tree_depth", "monitored"} <= set(image["diagnostics"])
    assert image["diagnostics"]["precondition_s"] > 0  # "auto": the Laplace preconditioner for this small w
    import arviz as az

    data = az.from_netcdf(out / "low_posterior.nc")
    assert data.sample_stats["tree_depth"].shape == (2, 3) and "sigma_pixel" in data.posterior
    assert torch.tensor(data.sample_stats["tree_depth"].values).le(2).all()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--method", "nuts", "--guide", "normal"], "--guide does not apply to --method nuts"),
        (["--svi-steps", "5", "--method", "hmc"], "--svi-steps does not apply to --method hmc"),
        (["--max-tree-depth", "3"], "--max-tree-depth does not apply to --method laplace"),
        (["--svi-steps", "3"], "--svi-steps does not apply to --method laplace"),
        (["--method", "nuts", "--trajectory-length", "1"], "--trajectory-length only applies to --method hmc"),
        (["--num-samples", "0"], "--num-samples: expected a positive integer"),
        (["--modes", "-1"], "--modes: expected a non-negative integer"),
        (["--method", "vi"], "invalid choice: 'vi'"),
        (["--method", "nuts", "--precondition", "lowrank"], "invalid choice: 'lowrank'"),
        (["--method", "svi", "--precondition", "none"], "--precondition does not apply to --method svi"),
        (["--model", "mixture"], "invalid choice: 'mixture'"),
        (["--sigma-reach", "-1"], "--sigma-reach: expected 'auto' or a non-negative finite number, got '-1'"),
        (["--sigma-reach", "big"], "--sigma-reach: expected 'auto' or a non-negative finite number"),
        (["--truth", "{files}/a_clean.png", "{files}/b_clean.png"], "--truth names 2 image\\(s\\) for 1 input"),
        (["--truth", "{files}/low.png"], "The --truth images are 4x4 pixels"),
    ],
)
def test_bad_options_get_one_line_and_write_nothing(files, tmp_path, capsys, options, message):
    out = tmp_path / "out"
    options = [option.format(files=files) for option in options]
    code = _sample(files, out, files / "a.png", "--task", "inpaint", "--mask", files / "mask.png", *options, *QUICK)
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("brgm: error: ") and error.count("\n") == 1
    assert re.search(message, error), error
    assert not out.exists()


def test_earlier_outputs_are_kept_without_force(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_std.png").write_bytes(b"earlier")
    code = _sample(files, out, files / "a.png", "--task", "inpaint", "--mask", files / "mask.png", *QUICK)
    assert code == 2 and "a_std.png already exists" in capsys.readouterr().err
    assert (out / "a_std.png").read_bytes() == b"earlier" and len(list(out.iterdir())) == 1


def test_without_generator_the_embedded_prior_is_used_and_a_colour_input_is_named(tmp_path, capsys):
    colour = tmp_path / "colour.png"
    io.write_image(colour, torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)))
    out = tmp_path / "out"
    nuts = ["--method", "nuts", "--num-chains", 1, "--warmup", 1, "--num-samples", 2, "--max-tree-depth", 1]
    argv = ["sample", colour, "--task", "superres", "--steps", 1, *nuts, "--precondition", "none"]
    argv += ["--out", out]
    assert main(list(map(str, argv))) == 0
    notes = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("brgm: note: ") and "misses the observed pixels" not in line]  # see test_fit
    assert notes[:2] == [
        "brgm: note: no --generator given: using the embedded prior fashion-mnist-32.",
        "brgm: note: 1 colour input(s) converted to grayscale (BT.601 luma) for the grayscale prior: colour.png "
        "(recorded in brgm.json).",
    ]
    # Two NUTS draws: no calibration of the card holds for them, and the note says so.
    assert len(notes) == 3 and notes[2].startswith("brgm: note: colour: The posterior's own intervals: ")
    summary = json.loads((out / "brgm.json").read_text())
    assert summary["settings"]["generator"]["source"] == "fashion-mnist-32" and summary["complete"] is True
    [image] = summary["images"]
    assert image["input_channels"] == 3 and "grayscale" in image["conversion"]
    with Image.open(out / "colour_mean.png") as mean:
        assert (mean.mode, mean.size) == ("L", (32, 32))


def test_a_type_error_inside_sampling_is_a_bug_not_bad_input(files, tmp_path, capsys, monkeypatch):
    def bug(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")

    monkeypatch.setattr(brgm_pyro, "sample_posterior", bug)
    inpaint = [files / "a.png", "--task", "inpaint", "--mask", files / "mask.png"]
    code = _sample(files, tmp_path / "out", *inpaint, *QUICK)
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "TypeError: unsupported operand" in err
    assert "brgm: error:" not in err and err.strip().splitlines()[-1].startswith("brgm: internal error:")


def test_torchs_deprecation_of_jit_script_is_not_shown_to_users(files, tmp_path):
    """The Laplace guide's Hessian uses torch's forward-mode autodiff, whose first use makes torch warn that
    torch.jit.script is deprecated: a fresh process (where that happens) prints nothing of it."""
    argv = [sys.executable, "-m", "brgm_pyro.cli", "sample", str(files / "low.png"), "--generator",
            str(files / "tiny.safetensors"), "--task", "superres", "--method", "svi", "--guide", "laplace", "--num-samples", "2",
            "--svi-steps", "2", "--steps", "2", "--perceptual", "none", "--out", str(tmp_path / "out"), "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads((tmp_path / "out" / "brgm.json").read_text())["settings"]["sampling"]["options"]["guide"] == "laplace"
