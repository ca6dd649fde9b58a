"""`brgm reconstruct-dataset` and `brgm report` from the command line: the options they share with `brgm
reconstruct` and `brgm sample`, one-line refusals that write nothing, a rerun that continues, the report."""

import json

import pytest
import torch
from conftest import sample_images, tiny_generator

import brgm_pyro as bp
from brgm_pyro import io
from brgm_pyro.cli import main
from brgm_pyro.dataset.manifest import read_manifest
from brgm_pyro.dataset.report import REPORT_NAME


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    return bp.save_generator(G, tmp_path_factory.mktemp("generator") / "tiny.safetensors")


@pytest.fixture
def inputs(tmp_path):
    G = tiny_generator(16)
    clean = sample_images(G, 3, seed=5)
    folder = tmp_path / "in"
    (folder / "low").mkdir(parents=True)
    (folder / "full").mkdir()
    low = bp.forward.Downsample(4)(clean).clamp(0, 1)
    for i in range(3):
        io.write_image(folder / "low" / f"{i}.png", low[i])
        io.write_image(folder / "full" / f"{i}.png", clean[i])
    return folder


def _dataset(folder, out, generator_file, *options):
    argv = ["reconstruct-dataset", str(folder), "--out", str(out), "--generator", str(generator_file),
            "--perceptual", "none", "--steps", "3", "--quiet", *map(str, options)]
    return main(argv)


def test_superres_folder_with_a_posterior_then_a_rerun_and_the_report(tmp_path, inputs, generator_file, capsys):
    out = tmp_path / "out"
    options = ["--task", "superres", "--factor", "4", "--posterior", "svi", "--num-samples", "2", "--svi-steps", "2",
               "--guide", "normal"]
    assert _dataset(inputs / "low", out, generator_file, *options) == 0
    assert "brgm: 3 image(s) reconstructed now, 0 done before, 0 failed" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest.settings["posterior"] == {
        "method": "svi", "num_samples": 2, "model": "auto", "sigma_reach": "auto",
        "options": {"guide": "normal", "steps": 2},
    }
    assert manifest.settings["forward"]["description"] == "factor=4, kernel='bicubic'"
    assert sorted(manifest.images) == ["0.png", "1.png", "2.png"]
    assert all(set(r["outputs"]) >= {"std", "posterior"} for r in manifest.images.values())
    assert _dataset(inputs / "low", out, generator_file, *options) == 0
    assert "0 image(s) reconstructed now, 3 done before" in capsys.readouterr().out

    assert main(["report", str(out)]) == 0
    assert f"wrote {out / REPORT_NAME}" in capsys.readouterr().out
    assert "1.png" in (out / REPORT_NAME).read_text()


def test_inpainting_a_folder_shows_the_hole_as_zero(tmp_path, inputs, generator_file):
    mask = torch.ones(16, 16)
    mask[4:10, 4:10] = 0
    io.write_image(tmp_path / "mask.png", mask)
    out = tmp_path / "out"
    assert _dataset(inputs / "full", out, generator_file, "--task", "inpaint", "--mask", tmp_path / "mask.png") == 0
    seen = io.read_image(out / read_manifest(out).images["0.png"]["outputs"]["input"])
    original = io.read_image(inputs / "full" / "0.png")
    assert seen[0, 4:10, 4:10].abs().max() == 0 and torch.equal(seen[0, :4], original[0, :4])


@pytest.mark.parametrize(
    "options, message",
    [
        (["--task", "superres"], "--task superres needs --factor for a folder"),
        (["--task", "superres", "--factor", "3"], "--factor 3 does not divide the generator's resolution 16"),
        (["--task", "superres", "--factor", "4", "--num-samples", "4"], "--num-samples only applies with --posterior"),
        (["--task", "superres", "--factor", "4", "--guide", "normal"], "--guide only applies with --posterior"),
        (["--task", "superres", "--factor", "4", "--posterior", "nuts", "--guide", "normal"],
         "--guide does not apply to --method nuts"),
        (["--task", "inpaint"], "--task inpaint needs --mask"),
        (["--task", "inpaint", "--factor", "2"], "--factor is only used by --task superres"),
    ],
)
def test_bad_options_end_in_one_line_and_write_nothing(tmp_path, inputs, generator_file, capsys, options, message):
    out = tmp_path / "out"
    assert _dataset(inputs / "low", out, generator_file, *options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("brgm: error: ") and message in err[0], err
    assert not out.exists()


def test_changed_settings_are_refused_in_one_line_until_force(tmp_path, inputs, generator_file, capsys):
    out = tmp_path / "out"
    assert _dataset(inputs / "low", out, generator_file, "--task", "superres", "--factor", "4") == 0
    before = json.loads((out / "run.json").read_text())
    capsys.readouterr()
    assert _dataset(inputs / "low", out, generator_file, "--task", "superres", "--factor", "4", "--seed", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"brgm: error: The folder {out} holds a run with other settings (seed: 0 -> 1); write to a new "
                   "output folder, or pass --force to redo every image there with the new settings."]
    assert json.loads((out / "run.json").read_text()) == before
    forced = ["--task", "superres", "--factor", "4", "--seed", "1", "--force"]
    assert _dataset(inputs / "low", out, generator_file, *forced) == 0
    assert read_manifest(out).settings["seed"] == 1


def test_report_of_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no brgm data-set run" in capsys.readouterr().err
    assert not (tmp_path / REPORT_NAME).exists()


def test_a_run_with_failed_images_says_how_many_and_where_their_reasons_are_and_exits_3(
    tmp_path, inputs, generator_file, capsys
):
    (inputs / "low" / "broken.png").write_bytes(b"not a png")
    io.write_image(inputs / "low" / "large.png", torch.rand(1, 16, 16))
    out = tmp_path / "out"
    assert _dataset(inputs / "low", out, generator_file, "--task", "superres", "--factor", "4") == 3
    captured = capsys.readouterr()
    assert "brgm: 3 image(s) reconstructed now, 0 done before, 2 failed" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("brgm: error: 2 image(s) failed (the first, broken.png: "), err
    assert err[0].endswith(f"every reason is in {out / 'manifest'}/ and in `brgm report {out}`; fix or remove those "
                           "images and run the same command again to finish them."), err
    reasons = {image: r["reason"] for image, r in read_manifest(out).images.items() if r["status"] == "failed"}
    assert sorted(reasons) == ["broken.png", "large.png"] and reasons["broken.png"].rstrip(".") + "); " in err[0]
    (inputs / "low" / "broken.png").unlink()
    (inputs / "low" / "large.png").unlink()
    assert _dataset(inputs / "low", out, generator_file, "--task", "superres", "--factor", "4") == 0
