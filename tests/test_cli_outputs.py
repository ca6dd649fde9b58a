"""Every command that writes an output folder: refused in one line, before any computation, when another run holds
the folder or when the folder cannot be written (/sys refuses root too); and the run that holds it stops others."""

import sys
from pathlib import Path

import pytest
import torch
from conftest import sample_images, tiny_generator

import brgm_pyro
import brgm_pyro.dataset.run
import brgm_pyro.demo
import brgm_pyro.evaluation
import brgm_pyro.fmnist.data
import brgm_pyro.training.recipe
import brgm_pyro.uncertainty.calibrate
from brgm_pyro import io
from brgm_pyro.cli import main
from brgm_pyro.forward import Downsample


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny generator file, a folder of two clean images and one of their x2 low-resolution versions."""
    root = tmp_path_factory.mktemp("files")
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    brgm_pyro.save_generator(G, root / "g.safetensors")
    clean = sample_images(G, 2, seed=3)
    for folder, images in (("clean", clean), ("low", Downsample(2)(clean).clamp(0, 1))):
        (root / folder).mkdir()
        for i, image in enumerate(images):
            io.write_image(root / folder / f"{i}.png", image)
    return root


def _explode(*args, **kwargs):
    raise AssertionError("the computation started")


# Command -> (its arguments before --out, the computation that must not start, where the lock is, relative to --out).
COMMANDS = {
    "reconstruct": (["reconstruct", "{low}/0.png", "--task", "superres", "--factor", "2", "--steps", "1"],
                    (brgm_pyro, "reconstruct"), ""),
    "sample": (["sample", "{low}/0.png", "--task", "superres", "--factor", "2", "--steps", "1", "--svi-steps", "1",
                "--num-samples", "2", "--method", "svi", "--guide", "normal"], (brgm_pyro, "sample_posterior"), ""),
    "reconstruct-dataset": (["reconstruct-dataset", "{low}", "--task", "superres", "--factor", "2", "--steps", "1"],
                            (brgm_pyro.dataset.run, "map_reconstruction"), ""),
    "evaluate": (["evaluate", "--task", "superres", "--factor", "2", "--inputs", "{low}", "--truth", "{clean}",
                  "--methods", "bicubic,brgm", "--steps", "1"], (brgm_pyro.evaluation, "_run_method"), ""),
    "train-prior": (["train-prior", "--batch-size", "4", "--channel-base", "64", "--channel-max", "8", "--kimg",
                     "0.004"], (brgm_pyro.training.recipe.Trainer, "step"), ""),
    "demo": (["demo", "--steps", "1"], (brgm_pyro.demo, "reconstruct"), ""),
    "calibrate": (["calibrate", "{clean}/0.png", "{clean}/1.png", "--task", "superres", "--factor", "2", "--steps",
                   "1", "--svi-steps", "1", "--num-samples", "2", "--method", "svi", "--guide", "normal"],
                  (brgm_pyro.uncertainty.calibrate, "calibrate"), "cal.json"),
}


def _argv(command, files, out):
    arguments, _, target = COMMANDS[command]
    argv = [a.format(low=files / "low", clean=files / "clean") for a in arguments]
    generator = [] if command in ("train-prior", "demo") else ["--generator", str(files / "g.safetensors")]
    perceptual = ["--perceptual", "none"] if command in ("reconstruct", "sample", "reconstruct-dataset",
                                                         "calibrate") else []
    return [*argv, *generator, *perceptual, "--out", str(out / target if target else out), "--quiet"]


@pytest.fixture
def no_computation(monkeypatch):
    """Make each command's computation fail loudly, and train-prior read random images instead of Fashion-MNIST."""
    for _, target, _ in COMMANDS.values():
        monkeypatch.setattr(*target, _explode)
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(brgm_pyro.fmnist.data, "load_fashion_mnist", lambda split: (images, torch.zeros(8)))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_another_run_holds_is_refused_in_one_line_before_any_computation(
    command, files, tmp_path, holders, no_computation, capsys
):
    out = tmp_path / "out"
    held = out / "cal.json.scores" if command == "calibrate" else out
    holder = holders(held)
    before = sorted(held.iterdir())
    assert main(_argv(command, files, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"brgm: error: The output folder {held} is in use by another run (sample, pid "
                             f"{holder.pid} on "), err
    assert sorted(held.iterdir()) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_folder_no_one_may_write_is_refused_in_one_line_before_any_computation(
    command, files, no_computation, capsys
):
    """/sys/kernel refuses new files and folders even to root (a read-only folder made with chmod does not), so
    the check holds whoever runs the tests."""
    if sys.platform != "linux":
        pytest.skip("/sys is Linux's")
    assert main(_argv(command, files, Path("/sys/kernel"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("brgm: error: Cannot write into the output folder /sys/kernel ("), err
    assert err[0].endswith("); choose another --out."), err
