"""The `brgm` command: end-to-end runs on a tiny generator, one-line errors that write nothing, output safety."""

import errno
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import brgm_pyro
from brgm_pyro import io
from brgm_pyro.card import PriorCard
from brgm_pyro.checkpoints import load_generator, save_generator
from brgm_pyro.cli import main
from brgm_pyro.cli import reconstruct as cli_reconstruct
from brgm_pyro.cli.plan import _conversion_note
from brgm_pyro.forward import Downsample, Mask
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.stylegan2 import StyleGAN2Generator

TINY = {
    "resolution": 16,
    "channels": 1,
    "z_dim": 16,
    "w_dim": 16,
    "mapping_layers": 2,
    "channel_base": 256,
    "channel_max": 16,
}


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    G = StyleGAN2Generator(**TINY, seed=0)
    path = tmp_path_factory.mktemp("generator") / "tiny.safetensors"
    save_generator(G, path)
    return path


@pytest.fixture(scope="module")
def clean(generator):
    return StyleGAN2Generator(**TINY, seed=0).sample(2, seed=1)


def _snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _numbers(tree):
    if isinstance(tree, dict):
        return [x for value in tree.values() for x in _numbers(value)]
    if isinstance(tree, list):
        return [x for value in tree for x in _numbers(value)]
    return [tree] if isinstance(tree, float) else []


def _reconstruct(inputs, generator, out, *options):
    argv = ["reconstruct", *map(str, inputs), "--generator", str(generator), "--out", str(out), "--quiet"]
    return main([*argv, *map(str, options)])


def test_superres_x4_end_to_end(tmp_path, generator, clean, capsys):
    f = Downsample(4, "bicubic")
    low = tmp_path / "in" / "face.png"
    low.parent.mkdir()
    io.write_image(low, f(clean[:1])[0])
    out = tmp_path / "out"

    assert _reconstruct([low], generator, out, "--task", "superres", "--factor", 4, "--steps", 3) == 0
    assert str(out) in capsys.readouterr().out

    assert sorted(p.name for p in out.iterdir()) == [
        "brgm.json",
        "face_input.png",
        "face_reconstruction.png",
        "face_reconstruction_corrupted.png",
    ]
    for name, size in [("face_reconstruction", 16), ("face_input", 4), ("face_reconstruction_corrupted", 4)]:
        with Image.open(out / f"{name}.png") as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (size, size))
    given = io.read_image(low)
    assert torch.equal(io.read_image(out / "face_input.png"), given)
    reconstruction = io.read_image(out / "face_reconstruction.png")
    corrupted = io.read_image(out / "face_reconstruction_corrupted.png")
    # The corrupted output is f(reconstruction), up to the 8-bit rounding of both files.
    assert (f(reconstruction[None])[0] - corrupted).abs().max() <= 2 / 255

    summary = json.loads((out / "brgm.json").read_text())
    assert summary["complete"] is True
    assert {"versions", "settings", "images", "wall_time_s"} <= set(summary)
    settings = summary["settings"]
    assert {"generator", "corruption", "params", "schedule", "seed", "perceptual", "device"} <= set(settings)
    assert settings["corruption"] == {
        "task": "superres",
        "operator": "Downsample",
        "factor": 4,
        "factor_inferred": False,
        "kernel": "bicubic",
        "sigma": None,
        "mask": None,
    }
    assert settings["schedule"]["steps"] == 3
    assert set(settings["params"]) == {"sigma_pixel", "sigma_percept", "kappa", "sigma_reach"}
    assert settings["generator"]["resolution"] == 16
    [image] = summary["images"]
    assert {"prior", "colinear", "pixel", "total"} <= set(image["final_losses"])
    assert set(image["data_consistency"]) == {"rmse", "psnr"}
    assert set(image["w"]) == {"mean", "std", "rms_z", "mean_cosine"}
    numbers = _numbers(summary)
    assert len(numbers) > 15 and all(math.isfinite(x) for x in numbers)
    # The reported data consistency is that of the files written, up to 8-bit rounding.
    assert (
        abs(image["data_consistency"]["rmse"] - float((corrupted - given).square().mean().sqrt())) < 2 / 255
    )


def test_inpaint_with_mask_png_and_a_batch_of_two(tmp_path, generator, clean):
    folder = tmp_path / "in"
    folder.mkdir()
    mask = Mask.center_box(16, 6).mask
    io.write_image(folder / "mask.png", mask)
    for i, name in enumerate("ab"):
        io.write_image(folder / f"{name}.png", clean[i] * mask + (1 - mask))  # a white hole
    out = tmp_path / "out"

    inputs = [folder / "a.png", folder / "b.png"]
    options = ["--task", "inpaint", "--mask", folder / "mask.png", "--batch-size", 2, "--steps", 2]
    assert _reconstruct(inputs, generator, out, *options) == 0

    for name in "ab":
        shown = io.read_image(out / f"{name}_input.png")
        assert torch.equal(
            shown, io.read_image(folder / f"{name}.png") * mask
        )  # hole shown as 0, rest lossless
        reconstruction = io.read_image(out / f"{name}_reconstruction.png")
        assert reconstruction.shape == (1, 16, 16)
        assert torch.equal(io.read_image(out / f"{name}_reconstruction_corrupted.png"), reconstruction * mask)
    summary = json.loads((out / "brgm.json").read_text())
    corruption = summary["settings"]["corruption"]
    assert corruption["operator"] == "Mask" and corruption["mask"] == str(folder / "mask.png")
    assert corruption["observed_fraction"] == pytest.approx(1 - 36 / 256)
    assert [image["name"] for image in summary["images"]] == ["a", "b"]
    assert [image["batch"] for image in summary["images"]] == [0, 0]


def test_modes_sets_the_search_and_zero_is_the_single_start(tmp_path, generator, clean):
    """--modes K is SearchSettings(modes=K), recorded in brgm.json; --modes 0 is bp.reconstruct(search=None)."""
    low = tmp_path / "in" / "a.png"
    low.parent.mkdir()
    io.write_image(low, Downsample(4)(clean[:1]).clamp(0, 1)[0])
    searched = {}
    for modes in (0, 2):
        out = tmp_path / f"out{modes}"
        assert _reconstruct([low], generator, out, "--task", "superres", "--steps", 2, "--modes", modes) == 0
        settings = json.loads((out / "brgm.json").read_text())["settings"]
        searched[modes] = settings["search"]
    assert searched[0] is None and searched[2]["modes"] == 2 and searched[2]["screen"] == brgm_pyro.SearchSettings().screen
    G = load_generator(str(generator))
    y = io.read_images([low], channels=G.channels)
    single = brgm_pyro.reconstruct(y, Downsample(4), G, steps=2, search=None, progress=False)
    written = io.read_image(tmp_path / "out0" / "a_reconstruction.png")
    assert torch.equal(written, torch.round(single.image[0] * 255) / 255)  # as 8-bit PNG


def test_factor_is_inferred_rgb_is_converted_and_batches_split(tmp_path, generator, clean):
    low = Downsample(2, "box")(clean)
    folder = tmp_path / "in"
    folder.mkdir()
    io.write_image(folder / "gray.png", low[0])
    io.write_image(folder / "colour.png", torch.cat([low[1], low[1].flip(-1), low[1].flip(-2)]))
    out = tmp_path / "out"

    inputs = [folder / "gray.png", folder / "colour.png"]
    assert (
        _reconstruct(
            inputs, generator, out, "--task", "superres", "--kernel", "box", "--batch-size", 1, "--steps", 2
        )
        == 0
    )

    summary = json.loads((out / "brgm.json").read_text())
    corruption = summary["settings"]["corruption"]
    assert (corruption["factor"], corruption["factor_inferred"], corruption["kernel"]) == (2, True, "box")
    gray, colour = summary["images"]
    assert (gray["batch"], colour["batch"]) == (0, 1)
    assert (gray["input_channels"], gray["conversion"]) == (1, None)
    assert colour["input_channels"] == 3 and "grayscale" in colour["conversion"]
    with Image.open(out / "colour_input.png") as image:
        assert (image.mode, image.size) == ("L", (8, 8))
    with Image.open(out / "colour_reconstruction.png") as image:
        assert (image.mode, image.size) == ("L", (16, 16))


@pytest.fixture
def world(tmp_path, generator):
    """Good and bad input files for the error cases; placeholders for the command lines."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    gray = torch.linspace(0, 1, 256).reshape(1, 16, 16)
    io.write_image(folder / "low.png", gray[:, :4, :4])
    io.write_image(folder / "sub" / "low.png", gray[:, 4:8, :4])
    io.write_image(folder / "full.png", gray)
    io.write_image(folder / "rect.png", gray[:, :4, :8])
    io.write_image(folder / "odd.png", gray[:, :5, :5])
    (folder / "notimage.png").write_text("not a png")
    io.write_image(folder / "mask.png", Mask.center_box(16, 4).mask)
    io.write_image(folder / "small_mask.png", Mask.center_box(8, 2).mask)
    io.write_image(folder / "black_mask.png", torch.zeros(16, 16))
    (folder / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken json....")
    (folder / "afile").write_text("keep me")
    return {"in": str(folder), "gen": str(generator), "out": str(tmp_path / "out")}


SUPERRES = ["--generator", "{gen}", "--task", "superres", "--out", "{out}"]
INPAINT = ["--generator", "{gen}", "--task", "inpaint", "--out", "{out}"]
LOW, FULL = "{in}/low.png", "{in}/full.png"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")


def _case(name, images, options, expected, marks=()):
    return pytest.param(["reconstruct", *images, *options], expected, id=name, marks=marks)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        _case("unknown-kernel", [LOW], [*SUPERRES, "--kernel", "lanczos"], "invalid choice: 'lanczos'"),
        _case(
            "factor-does-not-divide",
            [LOW],
            [*SUPERRES, "--factor", "3"],
            "does not divide the generator's resolution 16",
        ),
        _case("factor-does-not-match-input-size", [LOW], [*SUPERRES, "--factor", "2"], "needs 8x8 inputs"),
        _case("factor-zero", [LOW], [*SUPERRES, "--factor", "0"], "argument --factor"),
        _case("factor-cannot-be-inferred", ["{in}/odd.png"], SUPERRES, "Cannot infer --factor"),
        _case("non-square-input", ["{in}/rect.png"], SUPERRES, "square"),
        _case("inputs-of-different-sizes", [LOW, FULL], SUPERRES, "same size"),
        _case("two-inputs-one-name", [LOW, "{in}/sub/low.png"], SUPERRES, "share the name 'low'"),
        _case("same-input-twice", [LOW, LOW], SUPERRES, "given twice"),
        _case("missing-input", [LOW, "{in}/missing.png"], SUPERRES, "missing.png"),
        _case("input-not-an-image", [LOW, "{in}/notimage.png"], SUPERRES, "notimage.png"),
        _case("input-is-a-folder", ["{in}/sub"], SUPERRES, "is a folder"),
        _case(
            "missing-checkpoint",
            [LOW],
            [*SUPERRES, "--generator", "{in}/missing.safetensors"],
            "No generator file",
        ),
        _case(
            "corrupt-checkpoint",
            [LOW],
            [*SUPERRES, "--generator", "{in}/corrupt.safetensors"],
            "corrupt.safetensors",
        ),
        _case(
            "checkpoint-not-a-checkpoint",
            [LOW],
            [*SUPERRES, "--generator", FULL],
            "not a generator checkpoint",
        ),
        _case("unknown-prior-name", [LOW], [*SUPERRES, "--generator", "no-such-prior"], "no-such-prior"),
        _case("out-is-a-file", [LOW], [*SUPERRES, "--out", "{in}/afile"], "exists as a file"),
        _case("out-below-a-file", [LOW], [*SUPERRES, "--out", "{in}/afile/sub"], "is a file"),
        _case("mask-with-superres", [LOW], [*SUPERRES, "--mask", "{in}/mask.png"], "--mask is only used"),
        _case("sigma-without-gaussian-kernel", [LOW], [*SUPERRES, "--sigma", "1.5"], "--sigma is only used"),
        _case("zero-steps", [LOW], [*SUPERRES, "--steps", "0"], "argument --steps"),
        _case("non-numeric-steps", [LOW], [*SUPERRES, "--steps", "many"], "argument --steps"),
        _case("negative-lr", [LOW], [*SUPERRES, "--lr", "-1"], "argument --lr"),
        _case("nan-sigma-pixel", [LOW], [*SUPERRES, "--sigma-pixel", "nan"], "argument --sigma-pixel"),
        _case("zero-sigma-percept", [LOW], [*SUPERRES, "--sigma-percept", "0"], "argument --sigma-percept"),
        _case("negative-kappa", [LOW], [*SUPERRES, "--kappa", "-0.5"], "argument --kappa"),
        _case("zero-batch-size", [LOW], [*SUPERRES, "--batch-size", "0"], "argument --batch-size"),
        _case("unknown-perceptual", [LOW], [*SUPERRES, "--perceptual", "nope"], "'nope'"),
        _case("unknown-preset", [LOW], [*SUPERRES, "--preset", "best"], "'best'"),
        _case("unknown-task", [LOW], [*SUPERRES, "--task", "denoise"], "'denoise'"),
        _case("cuda-without-gpu", [LOW], [*SUPERRES, "--device", "cuda"], "CUDA", marks=NO_GPU),
        _case("missing-out", [LOW], SUPERRES[:-2], "--out"),
        _case("no-input", [], SUPERRES, "IMAGE"),
        _case("inpaint-without-mask", [FULL], INPAINT, "needs --mask"),
        _case("mask-of-another-size", [FULL], [*INPAINT, "--mask", "{in}/small_mask.png"], "8x8"),
        _case(
            "mask-observes-nothing",
            [FULL],
            [*INPAINT, "--mask", "{in}/black_mask.png"],
            "no pixel as observed",
        ),
        _case("missing-mask", [FULL], [*INPAINT, "--mask", "{in}/missing.png"], "missing.png"),
        _case(
            "factor-with-inpaint",
            [FULL],
            [*INPAINT, "--mask", "{in}/mask.png", "--factor", "2"],
            "--factor is only used",
        ),
        _case("inpaint-input-of-wrong-size", [LOW], [*INPAINT, "--mask", "{in}/mask.png"], "needs 16x16"),
        pytest.param([], "COMMAND", id="no-command"),
        pytest.param(["frobnicate"], "'frobnicate'", id="unknown-command"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(argv, expected, world, tmp_path, capsys):
    before = _snapshot(tmp_path)
    assert main([arg.format(**world) for arg in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("brgm: error: "), captured.err
    assert expected in lines[0]
    assert captured.out == ""
    assert _snapshot(tmp_path) == before


def _notes(stderr):
    """The notes about the run's inputs and settings (a result that misses its input has its own, see test_fit)."""
    return [line for line in stderr.splitlines()
            if line.startswith("brgm: note: ") and "misses the observed pixels" not in line]


def test_without_generator_the_embedded_prior_is_used_and_named(tmp_path, capsys):
    low = tmp_path / "low.png"
    io.write_image(low, torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)))
    out = tmp_path / "out"
    assert main(["reconstruct", str(low), "--task", "superres", "--steps", "1", "--out", str(out)]) == 0
    assert _notes(capsys.readouterr().err) == [
        "brgm: note: no --generator given: using the embedded prior fashion-mnist-32."
    ]
    settings = json.loads((out / "brgm.json").read_text())["settings"]
    assert settings["generator"]["source"] == "fashion-mnist-32" and settings["generator"]["path"] is None
    assert (settings["generator"]["resolution"], settings["corruption"]["factor"]) == (32, 4)
    with Image.open(out / "low_reconstruction.png") as image:
        assert image.size == (32, 32)


@pytest.mark.parametrize("prior_channels", [1, 3])
def test_an_input_converted_to_the_priors_channels_is_named_in_one_note(tmp_path, prior_channels, capsys):
    generator = tmp_path / "prior.safetensors"
    save_generator(StyleGAN2Generator(**{**TINY, "channels": prior_channels}, seed=0), generator)
    pixels = torch.rand(4, 4, 4, generator=torch.Generator().manual_seed(0))
    inputs = [tmp_path / "same.png", tmp_path / "other.png"]
    io.write_image(inputs[0], pixels[:prior_channels])
    io.write_image(inputs[1], pixels[: 4 - prior_channels])  # 3 channels for a grayscale prior, 1 for RGB
    argv = ["reconstruct", *map(str, inputs), "--generator", str(generator), "--task", "superres"]
    argv += ["--steps", "1"]

    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    [note] = _notes(capsys.readouterr().err)
    to_gray, to_rgb = "colour input(s) converted to grayscale", "grayscale input(s) repeated to RGB"
    conversion = to_gray if prior_channels == 1 else to_rgb
    assert note.startswith(f"brgm: note: 1 {conversion}") and "other.png" in note and "same.png" not in note
    images = json.loads((tmp_path / "out" / "brgm.json").read_text())["images"]
    assert [image["input_channels"] for image in images] == [prior_channels, 4 - prior_channels]
    assert main([*argv, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert _notes(capsys.readouterr().err) == []


def test_the_conversion_note_names_three_inputs_and_counts_the_rest():
    paths = [Path(f"in/{name}.png") for name in "abcdef"]
    note = _conversion_note(paths, [3, 1, 3, 3, 3, 3], channels=1)
    assert note.startswith("5 colour input(s) converted to grayscale")
    assert ": a.png, c.png, d.png and 2 more (recorded in brgm.json)" in note
    assert _conversion_note(paths, [1] * 6, channels=1) is None


BUGS = [ValueError("an internal shape check failed"), TypeError("unsupported operand type(s)")]


@pytest.mark.parametrize("error", BUGS, ids=lambda err: type(err).__name__)
@pytest.mark.parametrize(
    "where", [(brgm_pyro, "reconstruct"), (cli_reconstruct, "w_statistics")], ids=["library", "cli"]
)
def test_a_plain_value_or_type_error_is_a_bug_with_its_traceback_and_exit_1(
    error, where, tmp_path, generator, clean, capsys, monkeypatch
):
    """Only the project's input errors mean bad input: the same ValueError or TypeError raised by
    a bug inside the library or the command itself shows its traceback and exits 1."""

    def bug(*args, **kwargs):
        raise error

    monkeypatch.setattr(*where, bug)
    low = tmp_path / "low.png"
    io.write_image(low, Downsample(4)(clean[:1])[0])
    argv = ["reconstruct", str(low), "--generator", str(generator), "--task", "superres", "--steps", "1"]

    assert main([*argv, "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and f"{type(error).__name__}: {error}" in err
    assert "brgm: error:" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("brgm: internal error: this is a bug") and "report it" in last
    with pytest.raises(type(error), match=re.escape(str(error))):
        main(["--traceback", *argv, "--out", str(tmp_path / "again"), "--quiet"])


def test_a_file_the_user_cannot_write_is_bad_input(tmp_path, generator, clean, capsys, monkeypatch):
    """PermissionError is about the user's files: one line naming the file, exit 2 (the check
    itself cannot be provoked with chmod by a root user, so the error is raised where it arises)."""
    out = tmp_path / "out"

    def refuse(path, image):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(io, "write_image", refuse)
    low = tmp_path / "low.png"
    Image.fromarray((Downsample(4)(clean[:1])[0, 0] * 255).byte().numpy()).save(low)
    assert _reconstruct([low], generator, out, "--task", "superres", "--steps", 1) == 2
    target = out / "low_reconstruction.png"
    assert capsys.readouterr().err == f"brgm: error: cannot access {target}: {os.strerror(errno.EACCES)}.\n"


def test_never_overwrites_an_input_even_with_force(tmp_path, generator, clean, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    low = Downsample(4)(clean)
    # x's reconstruction would be written to x_reconstruction.png, which is itself an input.
    io.write_image(folder / "x.png", low[0])
    io.write_image(folder / "x_reconstruction.png", low[1])
    io.write_image(folder / "mask.png", Mask.center_box(16, 4).mask)
    io.write_image(folder / "full.png", clean[0])
    io.write_image(folder / "full_input.png", Mask.center_box(16, 4).mask)  # the mask, named like an output
    before = _snapshot(tmp_path)
    for force in ([], ["--force"]):
        inputs = [folder / "x.png", folder / "x_reconstruction.png"]
        assert _reconstruct(inputs, generator, folder, "--task", "superres", *force) == 2
        assert f"would overwrite the input {folder / 'x_reconstruction.png'}" in capsys.readouterr().err
        inpaint = ["--task", "inpaint", "--mask", folder / "full_input.png", *force]
        assert _reconstruct([folder / "full.png"], generator, folder, *inpaint) == 2
        assert f"would overwrite the input {folder / 'full_input.png'}" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_existing_outputs_are_kept_unless_forced(tmp_path, generator, clean, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    low = Downsample(4)(clean)
    io.write_image(folder / "x.png", low[0])
    io.write_image(folder / "y.png", low[1])
    out = tmp_path / "out"
    options = ["--task", "superres", "--steps", 2]
    assert _reconstruct([folder / "x.png"], generator, out, *options) == 0
    capsys.readouterr()
    before = _snapshot(tmp_path)

    assert _reconstruct([folder / "x.png"], generator, out, *options) == 2
    assert str(out / "x_reconstruction.png") in capsys.readouterr().err
    # Another input into the same folder would replace the earlier run's brgm.json.
    assert _reconstruct([folder / "y.png"], generator, out, *options) == 2
    assert str(out / "brgm.json") in capsys.readouterr().err
    assert _snapshot(tmp_path) == before

    io.write_image(out / "x_input.png", low[1])  # an earlier run's output, different from this run's
    assert _reconstruct([folder / "x.png"], generator, out, *options, "--force") == 0
    assert torch.equal(io.read_image(out / "x_input.png"), io.read_image(folder / "x.png"))
    assert json.loads((out / "brgm.json").read_text())["complete"] is True


def test_help_and_traceback_flag(tmp_path, capsys):
    assert main(["reconstruct", "--help"]) == 0
    assert "--task" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        main(
            [
                "--traceback",
                "reconstruct",
                str(tmp_path / "missing.png"),
                "--generator",
                "g",
                "--task",
                "superres",
                "--out",
                str(tmp_path / "out"),
            ]
        )


def test_module_entry_point_prints_help():
    result = subprocess.run(
        [sys.executable, "-m", "brgm_pyro.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "reconstruct" in result.stdout


def test_train_prior_resumes_with_path_length_regularisation_switched_on(tmp_path, monkeypatch):
    import brgm_pyro.fmnist.data

    images = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(brgm_pyro.fmnist.data, "load_fashion_mnist", lambda split: (images, torch.zeros(16)))
    run = tmp_path / "run"
    common = ["train-prior", "--out", str(run), "--batch-size", "4", "--channel-base", "64", "--channel-max", "8"]
    assert main([*common, "--kimg", "0.008", "--checkpoint-kimg", "0.004", "--pl-weight", "0", "--quiet"]) == 0
    state = torch.load(run / "training-state.pt", weights_only=True)
    assert json.loads(state["config"])["pl_weight"] == 0 and float(state["pl_mean"]) == 0
    assert main([*common, "--kimg", "0.024", "--quiet"]) == 0  # the default weight: 2, every 4th G step
    state = torch.load(run / "training-state.pt", weights_only=True)
    assert json.loads(state["config"])["pl_weight"] == 2 and float(state["pl_mean"]) > 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    checkpoints = [record for record in log if "kimg" in record]
    assert [r["kimg"] for r in checkpoints] == [0.004, 0.008, 0.024]
    assert "pl" not in checkpoints[1] and "pl" in checkpoints[2]
    assert log[2]["changed"] == {"pl_weight": [0.0, 2.0]}  # the resumption with another setting is logged
    assert (run / "generator.safetensors").exists()


def test_the_priors_card_schedule_is_the_default_and_single_fields_override_it(tmp_path):
    card = PriorCard.of(load_generator("fashion-mnist-32")).schedule
    low = tmp_path / "low.png"
    io.write_image(low, torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)))
    out = tmp_path / "out"
    assert main(["reconstruct", str(low), "--task", "superres", "--lr", "0.07", "--out", str(out), "--quiet"]) == 0
    schedule = json.loads((out / "brgm.json").read_text())["settings"]["schedule"]
    assert (schedule["steps"], schedule["rampdown"], schedule["lr"]) == (card.steps, card.rampdown, 0.07)
    assert card.steps != MAPSchedule().steps  # the card's schedule, not the library's


def test_train_prior_resumed_with_another_batch_size_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import brgm_pyro.fmnist.data

    images = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(brgm_pyro.fmnist.data, "load_fashion_mnist", lambda split: (images, torch.zeros(16)))
    run = tmp_path / "run"
    common = ["train-prior", "--out", str(run), "--channel-base", "64", "--channel-max", "8", "--quiet"]
    assert main([*common, "--batch-size", "4", "--kimg", "0.008", "--checkpoint-kimg", "0.004"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*common, "--batch-size", "8", "--kimg", "0.016"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"brgm: note: resuming {run} at 0.0 kimg with other settings than it was trained with so far (--batch-size 4 "
        "-> 8); the run goes on with the new ones."
    ]
    state = torch.load(run / "training-state.pt", weights_only=True)
    assert json.loads(state["config"])["batch_size"] == 8 and int(state["cur_nimg"]) == 16
    assert main([*common, "--batch-size", "8", "--kimg", "0.024"]) == 0
    assert capsys.readouterr().err == ""  # resumed as it was saved: no note
    wider = ["train-prior", "--out", str(run), "--channel-base", "64", "--channel-max", "16", "--quiet"]
    assert main([*wider, "--kimg", "0.032"]) == 2
    assert capsys.readouterr().err == (
        "brgm: error: The checkpoint was trained with another generator architecture (--channel-max 8, not 16); "
        "resume with the checkpoint's architecture or start a new run folder.\n"
    )
