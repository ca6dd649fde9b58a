"""brgm_pyro.evaluation and ``brgm evaluate``: outputs per image, tables, resuming after an interruption, and
one sentence for each bad input (an unknown method, one that does not apply, mismatched folders)."""

import json

import pytest
import torch
from conftest import sample_images, tiny_generator

import brgm_pyro as bp
from brgm_pyro import baselines, evaluation, io, metrics
from brgm_pyro.card import PriorCard
from brgm_pyro.cli import main
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Downsample


@pytest.fixture(scope="module")
def G():
    generator = tiny_generator(16).requires_grad_(False)
    generator.compute_w_stats(num_samples=256)
    return generator


@pytest.fixture(scope="module")
def images(G):
    return sample_images(G, 5, seed=7), torch.tensor([0, 1, 2, 3, 4])


FAST = [evaluation.Method("bicubic", "bicubic"), evaluation.Method("brgm", "brgm", {"steps": 3})]


def _evaluate(G, images, out, methods=FAST, setting=None, **kwargs):
    truth, labels = images
    setting = setting or evaluation.superres_setting(4)
    names = [f"{i:05d}" for i in range(truth.shape[0])]
    return evaluation.evaluate(setting, methods, out, G, truth=truth, names=names, labels=labels, batch_size=2,
                               progress=False, **kwargs)


def test_outputs_metrics_and_tables(G, images, tmp_path):
    result = _evaluate(G, images, tmp_path)
    truth = io.read_images([tmp_path / "truth" / f"{i:05d}.png" for i in range(5)])  # the 8-bit truth
    assert (truth - images[0]).abs().max() <= 0.5 / 255 + 1e-6
    for label in ("bicubic", "brgm"):
        outputs = io.read_images([tmp_path / label / f"{i:05d}.png" for i in range(5)])
        row = result["table"][label]["mean"]
        assert row["psnr"] == pytest.approx(float(metrics.psnr(outputs, truth).mean()), rel=1e-5)
        assert row["ssim"] == pytest.approx(float(metrics.ssim(outputs, truth).mean()), rel=1e-5)
        y = io.read_images([tmp_path / "inputs" / f"{i:05d}.png" for i in range(5)])
        f = Downsample(4)
        assert row["data_consistency"] == pytest.approx(
            float((f(outputs) - y).square().flatten(1).mean(1).sqrt().mean()), rel=1e-4)
        assert row["seconds_per_image"] >= 0 and "fmnist_eval_distance" not in row  # no evaluator given
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["names"] == [f"{i:05d}" for i in range(5)] and set(saved["table"]) == {"bicubic", "brgm"}
    assert (tmp_path / "results.md").read_text().startswith("| method | fmnist-eval distance")
    grid = io.read_image(tmp_path / "results.png")
    assert grid.shape[-2] == 2 + 5 * (16 * 4 + 2)  # 5 rows: input | bicubic | brgm | truth


def test_the_evaluator_adds_distance_and_class_fidelity(G, images, tmp_path):
    from brgm_pyro.fmnist import FMNISTEval

    evaluator = FMNISTEval()
    result = _evaluate(G, images, tmp_path, methods=FAST[:1], evaluator=evaluator)
    outputs = io.read_images([tmp_path / "bicubic" / f"{i:05d}.png" for i in range(5)])
    truth = io.read_images([tmp_path / "truth" / f"{i:05d}.png" for i in range(5)])
    row = result["table"]["bicubic"]["mean"]
    assert row["fmnist_eval_distance"] == pytest.approx(float(evaluator.distance(outputs, truth).mean()), rel=1e-5)
    expected = (evaluator.predict(outputs) == images[1]).float().mean()
    assert row["class_fidelity"] == pytest.approx(float(expected))


def test_a_run_stopped_midway_resumes_without_redoing_finished_images(G, images, tmp_path, monkeypatch):
    real = baselines.get("brgm")
    calls = []

    def interrupted(y, f, G, **options):
        calls.append(y.shape[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(y, f, G, **options)

    monkeypatch.setitem(baselines._METHODS, "brgm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(G, images, tmp_path / "resumed")
    assert sorted(p.name for p in (tmp_path / "resumed" / "brgm").glob("*.png")) == ["00000.png", "00001.png"]
    calls.clear()
    monkeypatch.setitem(baselines._METHODS, "brgm", lambda y, f, G, **o: calls.append(y.shape[0]) or real(y, f, G, **o))
    resumed = _evaluate(G, images, tmp_path / "resumed")
    assert calls == [2, 1]  # only the three unfinished images, in batches of 2
    monkeypatch.setitem(baselines._METHODS, "brgm", real)
    once = _evaluate(G, images, tmp_path / "once")
    for label in ("bicubic", "brgm"):
        a, b = resumed["table"][label]["per_image"], once["table"][label]["per_image"]
        assert a["psnr"] == pytest.approx(b["psnr"]) and a["data_consistency"] == pytest.approx(b["data_consistency"])


def test_a_folder_keeps_one_setting_and_one_set_of_options_per_label(G, images, tmp_path):
    _evaluate(G, images, tmp_path, methods=FAST[:1])
    with pytest.raises(InputError, match="another setting"):
        _evaluate(G, images, tmp_path, methods=FAST[:1], setting=evaluation.superres_setting(2))
    _evaluate(G, images, tmp_path, methods=FAST)  # a new method is added to the same folder
    with pytest.raises(InputError, match="made with"):
        _evaluate(G, images, tmp_path, methods=[evaluation.Method("brgm", "brgm", {"steps": 4})])


def test_a_function_option_is_recorded_by_its_name():
    from brgm_pyro.models import learned_noise

    record = evaluation.Method("brgm-learned-noise", "brgm", {"model": learned_noise.model}).record()
    assert record["options"]["model"] == "brgm_pyro.models.learned_noise.model"


def test_inpainting_applies_the_mask_kinds_in_turn(G, images, tmp_path):
    setting = evaluation.inpaint_setting(("centre-box", "right-half"), size=16)
    _evaluate(G, images, tmp_path, methods=[evaluation.Method("brgm", "brgm", {"steps": 2})], setting=setting)
    y = io.read_image(tmp_path / "inputs" / "00001.png")
    assert float(y[0, :, 8:].abs().max()) == 0.0 and float(y[0, :, :8].max()) > 0  # image 1: right half missing
    y = io.read_image(tmp_path / "inputs" / "00002.png")
    assert float(y[0, 4:12, 4:12].abs().max()) == 0.0  # image 2: the centre box


def test_free_form_masks_are_brush_strokes_seeded_by_the_image_s_index():
    from brgm_pyro.forward import free_form_mask

    setting = evaluation.inpaint_setting(("free-form", "centre-box"), size=16)
    masks = setting.corruption(["00004", "00007", "00004"]).mask
    assert torch.equal(masks[0, 0], free_form_mask(16, seed=4).mask)  # even index: free-form, seed 4
    assert torch.equal(masks[0], masks[2]) and not torch.equal(masks[0, 0], free_form_mask(16, seed=5).mask)
    assert float(masks[1, 0, 4:12, 4:12].max()) == 0.0  # odd index: the centre box
    with pytest.raises(InputError, match="Unknown mask kind 'brush'"):
        evaluation.inpaint_setting(("brush",))


def test_default_methods_and_their_bad_names():
    assert [m.name for m in evaluation.default_methods("inpaint")] == [
        name for name in baselines.available() if "inpaint" in baselines.tasks(name)]
    assert "pulse" in [m.name for m in evaluation.default_methods("superres")]
    with pytest.raises(InputError, match="Unknown baseline 'nearest'"):
        evaluation.default_methods("superres", ["nearest"])
    with pytest.raises(InputError, match="does not apply to inpaint"):
        evaluation.default_methods("inpaint", ["pulse"])


@pytest.fixture
def saved_generator(G, tmp_path):
    return str(bp.save_generator(G, tmp_path / "g.safetensors"))


def _folders(G, tmp_path, names=("a", "b")):
    inputs, truth = tmp_path / "low", tmp_path / "high"
    x = sample_images(G, len(names), seed=2)
    y = Downsample(4)(x).clamp(0, 1)
    for folder in (inputs, truth):
        folder.mkdir()
    for name, xi, yi in zip(names, x, y):
        io.write_image(truth / f"{name}.png", xi)
        io.write_image(inputs / f"{name}.png", yi)
    return inputs, truth


def test_cli_evaluates_inputs_made_elsewhere(G, saved_generator, tmp_path, capsys):
    inputs, truth = _folders(G, tmp_path)
    out = tmp_path / "eval"
    code = main(["evaluate", "--inputs", str(inputs), "--truth", str(truth), "--task", "superres", "--factor", "4",
                 "--methods", "bicubic", "--generator", saved_generator, "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "| bicubic |" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "bicubic").glob("*.png")) == ["a.png", "b.png"]
    assert not (out / "inputs").exists()  # the given inputs are read where they are


def test_cli_single_start_adds_a_row_without_the_search(G, saved_generator, tmp_path, capsys, monkeypatch):
    # the row takes the card's schedule; a short one keeps the test fast
    short = PriorCard(params=None, schedule=bp.MAPSchedule(steps=3), perceptual=None, sigma_reach=None)
    monkeypatch.setattr(PriorCard, "of", classmethod(lambda cls, generator: short))
    inputs, truth = _folders(G, tmp_path)
    out = tmp_path / "eval"
    code = main(["evaluate", "--inputs", str(inputs), "--truth", str(truth), "--task", "superres", "--factor", "4",
                 "--methods", "bicubic", "--single-start", "--generator", saved_generator, "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "| bicubic |" in capsys.readouterr().out
    record = json.loads((out / "brgm-single-start" / "method.json").read_text())
    assert record["name"] == "brgm" and record["options"]["search"] == "None"
    assert sorted(p.name for p in (out / "brgm-single-start").glob("*.png")) == ["a.png", "b.png"]


@pytest.mark.parametrize("arguments, sentence", [
    (["--task", "superres", "--factor", "4", "--methods", "nearest"], "Unknown baseline 'nearest'"),
    (["--task", "inpaint", "--methods", "pulse"], "does not apply to inpaint"),
    (["--task", "superres", "--methods", "bicubic"], "needs --factor"),
    (["--task", "superres", "--factor", "4", "--indices", "3-1x"], "expected numbers and ranges"),
    (["--task", "superres", "--factor", "4", "--methods", "bicubic", "--keep-observed"],
     "--keep-observed is for --task inpaint"),
], ids=["unknown-method", "not-for-the-task", "no-factor", "bad-indices", "keep-observed-superres"])
def test_cli_bad_inputs_get_one_sentence(arguments, sentence, saved_generator, tmp_path, capsys):
    code = main(["evaluate", *arguments, "--generator", saved_generator, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and sentence in err and err.count("\n") == 1, err


def test_cli_refuses_mismatched_inputs_and_truth(G, saved_generator, tmp_path, capsys):
    inputs, truth = _folders(G, tmp_path)
    (truth / "b.png").rename(truth / "c.png")
    code = main(["evaluate", "--inputs", str(inputs), "--truth", str(truth), "--task", "superres", "--factor", "4",
                 "--methods", "bicubic", "--generator", saved_generator, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "lacks b.png" in err and err.count("\n") == 1, err
    (truth / "c.png").rename(truth / "b.png")
    code = main(["evaluate", "--inputs", str(inputs), "--truth", str(truth), "--task", "superres", "--factor", "2",
                 "--methods", "bicubic", "--generator", saved_generator, "--out", str(tmp_path / "p"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "give the corruption that made the inputs" in err, err
    code = main(["evaluate", "--inputs", str(inputs), "--task", "superres", "--factor", "4", "--methods", "bicubic",
                 "--generator", saved_generator, "--out", str(tmp_path / "q"), "--quiet"])
    assert code == 2 and "go together" in capsys.readouterr().err


def test_force_redoes_a_folder_of_another_setting_or_other_options(G, images, tmp_path):
    _evaluate(G, images, tmp_path, methods=FAST)
    written = (tmp_path / "brgm" / "00000.png").stat().st_mtime_ns
    _evaluate(G, images, tmp_path, methods=FAST[:1], setting=evaluation.superres_setting(2), force=True)
    assert json.loads((tmp_path / "setting.json").read_text())["corruption"] == "Downsample(2, 'bicubic')"
    assert io.read_image(tmp_path / "inputs" / "00000.png").shape[-1] == 8  # the inputs of the new setting
    result = _evaluate(G, images, tmp_path, methods=[evaluation.Method("brgm", "brgm", {"steps": 4})],
                       setting=evaluation.superres_setting(2), force=True)
    assert result["table"]["brgm"]["method"]["options"] == {"steps": "4"}
    assert (tmp_path / "brgm" / "00000.png").stat().st_mtime_ns != written


def test_cli_a_bad_truth_folder_leaves_nothing_that_refuses_the_corrected_command(G, saved_generator, tmp_path,
                                                                                  capsys):
    inputs, truth = _folders(G, tmp_path)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (truth / "a.png").replace(wrong / "a.png")
    io.write_image(truth / "a.png", io.read_image(wrong / "a.png"))
    out = tmp_path / "eval"
    argv = ["evaluate", "--inputs", str(inputs), "--task", "superres", "--factor", "4", "--methods", "bicubic",
            "--generator", saved_generator, "--out", str(out), "--quiet"]
    assert main([*argv, "--truth", str(wrong)]) == 2
    assert "lacks b.png" in capsys.readouterr().err
    assert not (out / "setting.json").exists()
    assert main([*argv, "--truth", str(truth)]) == 0, capsys.readouterr().err


def test_cli_steps_sets_the_brgm_rows_map_and_force_redoes_them(G, saved_generator, tmp_path, capsys):
    inputs, truth = _folders(G, tmp_path)
    out = tmp_path / "eval"
    argv = ["evaluate", "--inputs", str(inputs), "--truth", str(truth), "--task", "superres", "--factor", "4",
            "--methods", "bicubic,brgm", "--single-start", "--generator", saved_generator, "--out", str(out), "--quiet"]
    assert main([*argv, "--steps", "2"]) == 0, capsys.readouterr().err
    for row in ("brgm", "brgm-single-start"):
        assert "steps=2," in json.loads((out / row / "method.json").read_text())["options"]["schedule"]
    assert json.loads((out / "bicubic" / "method.json").read_text())["options"] == {}
    capsys.readouterr()
    assert main([*argv, "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "holds outputs of brgm made with" in err and "pass --force to redo every image" in err
    assert main([*argv, "--steps", "3", "--force"]) == 0, capsys.readouterr().err
    assert "steps=3," in json.loads((out / "brgm" / "method.json").read_text())["options"]["schedule"]
