"""The baselines: the registry, bicubic against Pillow, biharmonic, the masks, the supervised networks
(a tiny one for the mechanics, the shipped ones against bicubic/biharmonic on val images), their
training (resumed bit-identically) and every bad input's sentence."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_generator
from PIL import Image

from brgm_pyro import baselines
from brgm_pyro.baselines.masks import MASK_KINDS, cyclic_masks, mask, random_masks
from brgm_pyro.baselines.supervised import TASKS, build_network, load_network, save_network, weights_path
from brgm_pyro.baselines.training import Schedule, train
from brgm_pyro.errors import CheckpointError, InputError, InputTypeError, MissingWeightsError
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.forward import Blur, Compose, Downsample, Mask

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def val_images(fashion_mnist_dir) -> torch.Tensor:
    return load_fashion_mnist("val", root=fashion_mnist_dir)[0][:16]


def _blob(size: int = 32, width: float = 6.0) -> torch.Tensor:
    grid = torch.arange(size, dtype=torch.float32) - size / 2 + 0.5
    return torch.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * width**2))[None, None]


def _l1(x: torch.Tensor, truth: torch.Tensor) -> float:
    return float((x - truth).abs().mean())


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_bad_names():
    assert baselines.available() == ("bicubic", "biharmonic", "supervised", "pulse", "projector", "brgm", "brgm-mean",
                                     "dps", "diffpir", "tv", "dip")
    for name in baselines.available():
        assert callable(baselines.get(name))
    with pytest.raises(InputError, match=r"Unknown baseline 'esrgan'; choose one of bicubic, biharmonic, supervised, "
                                         r"pulse, projector, brgm, brgm-mean, dps, diffpir, tv, dip\."):
        baselines.get("esrgan")
    with pytest.raises(InputTypeError, match="named by a string"):
        baselines.get(3)


@pytest.mark.parametrize("name", ["bicubic", "biharmonic", "supervised"])
def test_bad_observations_get_one_sentence(name):
    method, f = baselines.get(name), Downsample(4)
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        method(torch.full((1, 1, 8, 8), 1.5), f)
    with pytest.raises(InputError, match="NaN"):
        method(torch.full((1, 1, 8, 8), float("nan")), f)
    with pytest.raises(InputError, match=r"y\[None\]"):
        method(torch.rand(8, 8), f)
    with pytest.raises(InputTypeError, match="torch.Tensor"):
        method(np.zeros((1, 1, 8, 8)), f)
    with pytest.raises(InputTypeError, match="corruption operator"):
        method(torch.rand(1, 1, 8, 8), lambda x: x)


# ----------------------------------------------------------------------------- bicubic


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bicubic_equals_pillow_and_is_data_consistent_on_smooth_images(factor, val_images):
    f = Downsample(factor, "bicubic")
    y = f(val_images[:4]).clamp(0, 1)
    out = baselines.get("bicubic")(y, f)
    assert out.shape == (4, 1, 32, 32) and out.min() >= 0 and out.max() <= 1
    reference = [np.asarray(Image.fromarray(image[0].numpy()).resize((32, 32), Image.Resampling.BICUBIC)) for image in y]
    np.testing.assert_allclose(out[:, 0].numpy(), np.stack(reference).clip(0, 1), atol=1e-5)
    # Interpolation is the more exact the smoother the image is at y's resolution, so downsampling the
    # result gives y back: within 5% for a blob two low-resolution pixels wide.
    errors = []
    for width in (1.0, 1.5, 2.0):
        smooth = f(_blob(width=width * factor)).clamp(0, 1)
        errors.append(float((f(baselines.get("bicubic")(smooth, f)) - smooth).abs().max() / smooth.max()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.05
    constant = torch.full((2, 1, 32 // factor, 32 // factor), 0.3)
    torch.testing.assert_close(baselines.get("bicubic")(constant, f), torch.full((2, 1, 32, 32), 0.3))


def test_bicubic_sizes_from_g_and_blurred_inputs_and_refuses_masks():
    G = tiny_generator(16)
    bicubic = baselines.get("bicubic")
    assert bicubic(torch.rand(3, 1, 4, 4), Downsample(4), G).shape == (3, 1, 16, 16)
    assert bicubic(torch.rand(2, 3, 4, 4), Compose(Blur.gaussian(1.0), Downsample(8, "box"))).shape == (2, 3, 32, 32)
    with pytest.raises(InputError, match="y has shape .* gives .*; resize the input"):
        bicubic(torch.rand(1, 1, 8, 8), Downsample(4), G)
    with pytest.raises(InputError, match="bicubic is a super-resolution method .* use biharmonic for a Mask"):
        bicubic(torch.rand(1, 1, 32, 32), Mask.half(32))


# ----------------------------------------------------------------------------- biharmonic


def test_biharmonic_keeps_observed_pixels_and_fills_a_ramp_exactly(val_images):
    masks = cyclic_masks(len(val_images))
    y = val_images * masks
    out = baselines.get("biharmonic")(y, Mask(masks))
    assert out.shape == y.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out * masks, y)
    # A linear ramp is biharmonic, so it is recovered inside any hole.
    ramp = torch.linspace(0.1, 0.9, 32).expand(1, 1, 32, 32).contiguous()
    centre = Mask.center_box(32, 12)
    torch.testing.assert_close(baselines.get("biharmonic")(centre(ramp), centre), ramp, atol=1e-5, rtol=0)


def test_biharmonic_refuses_downsampling_and_a_mask_that_hides_everything():
    biharmonic = baselines.get("biharmonic")
    with pytest.raises(InputError, match="biharmonic is an inpainting method .* use bicubic"):
        biharmonic(torch.rand(1, 1, 8, 8), Downsample(4))
    with pytest.raises(InputError, match="hides every pixel of image 0"):
        biharmonic(torch.zeros(1, 1, 16, 16), Mask(torch.zeros(16, 16)))
    with pytest.raises(InputError, match="Mask of size 16x16 does not match"):
        biharmonic(torch.rand(1, 1, 32, 32), Mask.half(16))


# ----------------------------------------------------------------------------- masks


def test_masks_have_the_documented_holes():
    missing = {kind: int((mask(kind) == 0).sum()) for kind in MASK_KINDS}
    assert missing == {"right-half": 512, "left-half": 512, "two-boxes": 128, "vertical-bar": 192,
                       "top-right-quadrant": 256, "centre-box": 256, "bottom-half": 512}  # fmt: skip
    assert mask("right-half")[:, 16:].eq(0).all() and mask("right-half")[:, :16].eq(1).all()
    assert mask("top-right-quadrant")[:16, 16:].eq(0).all() and mask("top-right-quadrant")[16:].eq(1).all()
    assert mask("centre-box", 64).eq(0).sum() == 4 * 256
    cyclic = cyclic_masks(9)
    assert torch.equal(cyclic[7, 0], mask(MASK_KINDS[0])) and torch.equal(cyclic[8, 0], mask(MASK_KINDS[1]))
    with pytest.raises(InputError, match="Unknown mask kind 'square'"):
        mask("square")


def test_random_masks_vary_around_their_kind_and_are_seeded():
    first = random_masks(700, torch.Generator().manual_seed(0))
    assert torch.equal(first, random_masks(700, torch.Generator().manual_seed(0)))
    missing = (first == 0).flatten(1).sum(1)
    assert missing.min() >= 1 and (first == 1).flatten(1).sum(1).min() >= 1
    canonical = torch.stack([mask(kind) for kind in MASK_KINDS])
    exact = (first[:, 0, None] == canonical[None]).flatten(2).all(2).any(1)
    assert exact.float().mean() < 0.05  # almost every mask is moved off its kind
    assert len(torch.unique(first.flatten(1), dim=0)) > 600


# ----------------------------------------------------------------------------- supervised (mechanics)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> dict:
    """Untrained tiny networks saved as weight files, one per task."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    paths = {}
    for task in TASKS:
        config = dict(features=8, blocks=1) if task == "inpaint" else dict(features=8, blocks=1, min_features=8)
        paths[task] = save_network(build_network(task, **config), task, folder / f"{task}.safetensors")
    return paths


def test_supervised_shapes_range_and_kept_pixels(tiny_weights):
    supervised = baselines.get("supervised")
    torch.manual_seed(1)
    for factor in (2, 4, 8):
        out = supervised(torch.rand(3, 1, 32 // factor, 32 // factor), Downsample(factor), weights=tiny_weights[f"sr-x{factor}"])
        assert out.shape == (3, 1, 32, 32) and out.min() >= 0 and out.max() <= 1
    masks = cyclic_masks(5)
    y = torch.rand(5, 1, 32, 32) * masks
    out = supervised(y, Mask(masks), weights=tiny_weights["inpaint"], batch_size=2)
    assert out.shape == y.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out * masks, y)


def test_untrained_networks_start_from_the_simple_reconstruction(val_images):
    f = Downsample(4)
    y = f(val_images[:3]).clamp(0, 1)
    torch.testing.assert_close(build_network("sr-x4", features=8, blocks=1)(y), baselines.get("bicubic")(y, f))
    masks = cyclic_masks(3)
    out = build_network("inpaint", features=4, levels=2, max_features=8)(val_images[:3] * masks, masks)
    for image, truth, m in zip(out, val_images[:3], masks):
        torch.testing.assert_close(image[m == 0], truth[m == 1].mean().expand(int((m == 0).sum())))


def test_supervised_weight_files_round_trip_and_bad_files(tiny_weights, tmp_path):
    task, network = load_network(tiny_weights["sr-x4"])
    assert task == "sr-x4" and not network.training
    again = build_network("sr-x4", **network.config)
    again.load_state_dict(network.state_dict())
    y = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(again(y), network(y))
    supervised = baselines.get("supervised")
    with pytest.raises(InputError, match="holds the sr-x4 network, but f needs the sr-x8 one"):
        supervised(torch.rand(1, 1, 4, 4), Downsample(8), weights=tiny_weights["sr-x4"])
    with pytest.raises(MissingWeightsError, match="is missing; train it with `python scripts/train_baselines.py`"):
        supervised(y, Downsample(4), weights=tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a network")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        supervised(y, Downsample(4), weights=tmp_path / "junk.safetensors")


def test_supervised_names_the_mismatch_and_runs_when_allowed(tiny_weights):
    supervised = baselines.get("supervised")
    weights = tiny_weights["sr-x4"]
    y = torch.rand(2, 1, 8, 8)
    shifted = Compose(Blur.gaussian(1.0), Downsample(4, "bicubic"))
    for f, name in ((Downsample(4, "box"), r"Downsample\(4, 'box'\)"), (shifted, r"Compose\(Blur\(7x7\), Downsample")):
        with pytest.raises(InputError, match=rf"sr-x4 network was trained on Downsample\(4, 'bicubic'\) only, not on {name}"):
            supervised(y, f, weights=weights)
        assert supervised(y, f, weights=weights, allow_mismatch=True).shape == (2, 1, 32, 32)
    with pytest.raises(InputError, match="No supervised network applies to Blur"):
        supervised(torch.rand(1, 1, 32, 32), Blur.gaussian(1.0))
    with pytest.raises(InputError, match="No supervised network applies to Compose"):
        supervised(torch.rand(1, 1, 16, 16), Compose(Mask.half(32), Downsample(2)))
    with pytest.raises(InputError, match="trained on 32x32 images, not 64x64"):
        supervised(torch.rand(1, 1, 16, 16), Downsample(4), weights=weights)
    assert supervised(torch.rand(1, 1, 16, 16), Downsample(4), weights=weights, allow_mismatch=True).shape[-1] == 64
    with pytest.raises(InputError, match="take grayscale images"):
        supervised(torch.rand(1, 3, 8, 8), Downsample(4), weights=weights)


# ----------------------------------------------------------------------------- the shipped networks


SHIPPED = [task for task in TASKS if weights_path(task).is_file()]


def test_the_package_ships_the_x2_x4_x8_and_inpainting_networks():
    """The networks the comparison (docs/results/comparison.md) uses are package data; the others
    raise MissingWeightsError with the training command."""
    assert {"sr-x2", "sr-x4", "sr-x8", "inpaint"} <= set(SHIPPED)
    for task in set(TASKS) - set(SHIPPED):
        f = Downsample(TASKS[task], "bicubic")
        with pytest.raises(MissingWeightsError, match="train it with `python scripts/train_baselines.py"):
            baselines.get("supervised")(torch.rand(1, 1, 32 // TASKS[task], 32 // TASKS[task]), f)


@pytest.mark.parametrize("task", SHIPPED)
def test_shipped_network_beats_its_classical_baseline_on_val_images(task, val_images):
    """On 16 val images (the networks were selected on val, never trained on it) each shipped network
    has a lower L1 than bicubic / biharmonic, and its card matches the weights."""
    card = json.loads(weights_path(task).with_suffix(".json").read_text())
    trained_task, network = load_network(weights_path(task))
    assert trained_task == task and card["parameters"] == sum(p.numel() for p in network.parameters())
    assert len(card["history"]) == card["epochs"] and (weights_path(task).parent / card["curves"]).is_file()
    if TASKS[task] is None:
        masks = cyclic_masks(len(val_images))
        y, f, reference = val_images * masks, Mask(masks), "biharmonic"
    else:
        f = Downsample(TASKS[task], "bicubic")
        y, reference = f(val_images).clamp(0, 1), "bicubic"
    assert _l1(baselines.get("supervised")(y, f), val_images) < _l1(baselines.get(reference)(y, f), val_images)


# ----------------------------------------------------------------------------- training


def _tiny_train(out_dir, epochs, log=print, lr=1e-3):
    schedule = Schedule(lr=lr, batch_size=16, max_epochs=epochs)
    return train("inpaint", out_dir, config=dict(features=4, levels=2, blocks=1, max_features=8), schedule=schedule,
                 train_size=48, val_size=14, progress=False, log=log)  # fmt: skip


def test_training_writes_the_card_and_resumes_bit_identically(tmp_path, fashion_mnist_dir):
    straight = _tiny_train(tmp_path / "straight", epochs=2)

    def interrupt(line):
        if "epoch 1:" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tiny_train(tmp_path / "resumed", epochs=2, log=interrupt)
    assert not (tmp_path / "resumed" / "supervised-inpaint.safetensors").exists()
    lines = []
    resumed = _tiny_train(tmp_path / "resumed", epochs=2, log=lines.append)
    assert lines[0].startswith("inpaint: resuming after epoch 1")
    assert [row["val_l1"] for row in resumed["history"]] == [row["val_l1"] for row in straight["history"]]
    a = load_network(tmp_path / "straight" / "supervised-inpaint.safetensors")[1].state_dict()
    b = load_network(tmp_path / "resumed" / "supervised-inpaint.safetensors")[1].state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    card = json.loads((tmp_path / "resumed" / "supervised-inpaint.json").read_text())
    assert card["epochs"] == 2 and card["stopped"] == "epoch limit (2)" and card["val_reference"]["method"] == "biharmonic"
    curves = (tmp_path / "resumed" / "supervised-inpaint-curves.csv").read_text().splitlines()
    assert curves[0] == "epoch,lr,train_l1,val_l1,val_psnr,seconds" and len(curves) == 3
    with pytest.raises(InputError, match="holds a run with other settings"):
        _tiny_train(tmp_path / "resumed", epochs=2, lr=3e-3)
    # A higher epoch limit continues a run that the lower one stopped.
    longer = _tiny_train(tmp_path / "resumed", epochs=3, log=lines.append)
    assert longer["epochs"] == 3 and longer["history"][:2] == resumed["history"] and lines[-1].startswith("inpaint epoch 3")
