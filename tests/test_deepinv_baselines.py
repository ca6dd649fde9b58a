"""The deepinv competitors (dps, diffpir, tv, dip) and their diffusion denoiser: the denoiser's preconditioning,
file and training (resumed bit-identically), f as deepinv's physics (its adjoint), what each solver does with
the data, seeds, the missing package, and every bad input's sentence. They run with the real deepinv."""

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch

from brgm_pyro import baselines, evaluation
from brgm_pyro.baselines import deepinv_physics
from brgm_pyro.baselines.denoiser import SIGMA_DATA, Denoiser, load_denoiser, save_denoiser, weights_path
from brgm_pyro.baselines.diffusion import posterior_draws
from brgm_pyro.baselines.diffusion_training import DiffusionSchedule, train_denoiser
from brgm_pyro.baselines.dip import _OneImage
from brgm_pyro.baselines.masks import cyclic_masks
from brgm_pyro.errors import CheckpointError, InputError, MissingWeightsError
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.forward import Blur, Compose, Downsample, Mask

needs_deepinv = pytest.mark.skipif(importlib.util.find_spec("deepinv") is None,
                                   reason="deepinv is not installed (pip install 'brgm-pyro[deepinv]')")


@pytest.fixture(scope="module")
def val_images(fashion_mnist_dir) -> torch.Tensor:
    return load_fashion_mnist("val", root=fashion_mnist_dir, pad_to=32)[0][:8]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    return save_denoiser(Denoiser(channels=[8, 8, 8], embedding=16), tmp_path_factory.mktemp("denoiser") / "d.safetensors")


def _edge_image() -> torch.Tensor:
    """A piecewise-constant 32x32 image: a bright rectangle on a dark ground (TV's ideal)."""
    image = torch.full((1, 1, 32, 32), 0.1)
    image[..., 8:24, 10:22] = 0.8
    return image


# ----------------------------------------------------------------------------- the denoiser


def test_the_preconditioning_is_edm_in_the_centred_range():
    torch.manual_seed(0)
    denoiser = Denoiser(channels=[8, 8, 8], embedding=16)
    x = torch.rand(3, 1, 32, 32)
    # Untrained, F = 0 (its last conv starts at zero): D'(x') = c_skip x', so D(x) = (c_skip (2x - 1) + 1) / 2.
    for sigma in (0.01, 0.3, 50.0):
        c_skip = SIGMA_DATA**2 / ((2 * sigma) ** 2 + SIGMA_DATA**2)
        torch.testing.assert_close(denoiser(x, sigma), (c_skip * (2 * x - 1) + 1) / 2)
    for parameter in denoiser.parameters():  # any weights: a number, a 0-d tensor and one level per image agree
        parameter.data.normal_(0, 0.1)
    a = denoiser(x, 0.2)
    torch.testing.assert_close(denoiser(x, torch.tensor(0.2)), a)
    torch.testing.assert_close(denoiser(x, torch.full((3,), 0.2)), a)
    per_image = denoiser(x, torch.tensor([0.2, 0.5, 0.05]))
    torch.testing.assert_close(per_image[0], a[0])
    assert not torch.allclose(per_image[1], a[1])


def test_the_denoiser_file_round_trips_and_foreign_files_are_refused(tiny_weights, tmp_path):
    loaded = load_denoiser(tiny_weights)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    assert loaded.config == {"channels": [8, 8, 8], "blocks": 1, "embedding": 16, "image_channels": 1}
    state = torch.get_rng_state()
    load_denoiser(save_denoiser(loaded, tmp_path / "again.safetensors"))  # a new file is built, not cached
    assert torch.equal(torch.get_rng_state(), state)  # building it left the caller's generator alone
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a diffusion denoiser of brgm-pyro"):
        load_denoiser(tmp_path / "other.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_denoiser(tmp_path / "broken.safetensors")
    with pytest.raises(MissingWeightsError, match="train it with `python scripts/train_diffusion.py`"):
        load_denoiser(tmp_path / "missing.safetensors")


def _tiny_training(out_dir, steps, log=print, lr=1e-3):
    schedule = DiffusionSchedule(steps=steps, batch_size=8, lr=lr, warmup=2, eval_every=2, eval_images=8)
    return train_denoiser(out_dir, config=dict(channels=[8, 8, 8], blocks=1, embedding=16), schedule=schedule,
                          train_size=32, val_size=8, progress=False, log=log)


def test_training_writes_the_card_and_resumes_bit_identically(tmp_path, fashion_mnist_dir):
    straight = _tiny_training(tmp_path / "straight", steps=4)
    _tiny_training(tmp_path / "resumed", steps=2)  # a lower step limit stops the same run early
    lines = []
    resumed = _tiny_training(tmp_path / "resumed", steps=4, log=lines.append)
    assert lines[0].startswith("diffusion-fmnist-32: resuming after step 2")
    assert [row["val_loss"] for row in resumed["history"]] == [row["val_loss"] for row in straight["history"]]
    a = load_denoiser(tmp_path / "straight" / "diffusion-fmnist-32.safetensors").state_dict()
    b = load_denoiser(tmp_path / "resumed" / "diffusion-fmnist-32.safetensors").state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    card = json.loads((tmp_path / "resumed" / "diffusion-fmnist-32.json").read_text())
    assert card["steps"] == 4 and card["images_seen"] == 32 and card["stopped"] == "step limit (4)"
    assert set(card["val"]["denoising_psnr"]) == {"0.05", "0.1", "0.2", "0.4"} and card["val"]["images"] == 8
    assert card["parameters"] == sum(p.numel() for p in Denoiser(**card["config"]).parameters())
    curves = (tmp_path / "resumed" / "diffusion-fmnist-32-curves.csv").read_text().splitlines()
    assert curves[0] == "step,train_loss,val_loss,seconds" and len(curves) == 3
    assert (tmp_path / "resumed" / "diffusion-fmnist-32.md").read_text().startswith("# Diffusion denoiser")
    with pytest.raises(InputError, match="holds a run with other settings"):
        _tiny_training(tmp_path / "resumed", steps=4, lr=3e-3)


def test_a_time_limit_stops_a_run_that_resumes(tmp_path, fashion_mnist_dir):
    schedule = DiffusionSchedule(steps=50, batch_size=8, warmup=2, eval_every=10, eval_images=8)
    card = train_denoiser(tmp_path, config=dict(channels=[8, 8, 8], embedding=16), schedule=schedule, train_size=32,
                          val_size=8, max_minutes=1e-9, progress=False, log=lambda line: None)
    assert card["steps"] == 1 and card["stopped"].startswith("time limit") and len(card["history"]) == 1
    with pytest.raises(InputError, match="max_minutes must be a positive"):
        train_denoiser(tmp_path, schedule=schedule, max_minutes=0)


def test_the_shipped_denoiser_denoises_validation_images(val_images):
    denoiser = load_denoiser()
    generator = torch.Generator().manual_seed(0)
    for sigma in (0.1, 0.3):
        noisy = val_images + sigma * torch.randn(val_images.shape, generator=generator)
        noisy_error = (noisy - val_images).square().mean()
        error = (denoiser(noisy, sigma).clamp(0, 1) - val_images).square().mean()
        assert error < noisy_error / 5  # 7 dB better than the noisy input (the card: 9.2 dB at sigma 0.1)
    card = json.loads(weights_path().with_suffix(".json").read_text())
    assert card["name"] == "diffusion-fmnist-32" and "test split was not used" in card["data"]


# ----------------------------------------------------------------------------- f as deepinv's physics


@needs_deepinv
@pytest.mark.parametrize("f", [Downsample(4), Downsample(2, "box"), Mask(cyclic_masks(3, 32)),
                               Blur.gaussian(1.5), Compose(Blur.gaussian(1.0), Downsample(2))],
                         ids=["bicubic", "box", "masks", "blur", "compose"])
def test_as_physics_applies_f_and_its_adjoint(f):
    generator = torch.Generator().manual_seed(0)
    physics = deepinv_physics.as_physics(f, torch.Size((3, 1, 32, 32)))
    x = torch.rand(3, 1, 32, 32, generator=generator)
    torch.testing.assert_close(physics.A(x), f(x))
    v = torch.rand(f(x).shape, generator=generator)
    assert float((f(x) * v).sum()) == pytest.approx(float((x * physics.A_adjoint(v)).sum()), rel=1e-5)


@needs_deepinv
def test_one_image_of_a_batch_gets_its_own_corruption():
    masks = cyclic_masks(3, 32)
    f = Mask(masks)
    x = torch.rand(1, 1, 32, 32)
    for index in range(3):
        torch.testing.assert_close(_OneImage(f, index, 3)(x), x * masks[index : index + 1])


def test_without_deepinv_the_methods_say_how_to_install_it(monkeypatch):
    real_import = deepinv_physics.importlib.import_module
    monkeypatch.setattr(deepinv_physics.importlib, "import_module",
                        lambda name: real_import("no_such_package_deepinv") if name == "deepinv" else real_import(name))
    monkeypatch.setattr(baselines.importlib.util, "find_spec", lambda name: None)
    y = torch.rand(1, 1, 8, 8)
    for name in ("dps", "diffpir", "tv", "dip"):
        with pytest.raises(InputError, match=r"pip install 'brgm-pyro\[deepinv\]'"):
            baselines.get(name)(y, Downsample(4))
        assert "not installed" in baselines.unavailable(name)
        with pytest.raises(InputError, match="not installed"):  # refused before any compute starts
            evaluation.default_methods("superres", [name])
    assert baselines.unavailable("bicubic") is None
    assert "dps" not in [m.name for m in evaluation.default_methods("superres")]


# ----------------------------------------------------------------------------- the solvers


@needs_deepinv
@pytest.mark.parametrize("name", ["dps", "diffpir", "tv", "dip"])
def test_bad_inputs_get_one_sentence(name, tiny_weights):
    method, f = baselines.get(name), Downsample(4)
    weights = {"weights": tiny_weights} if name in ("dps", "diffpir") else {}
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        method(torch.full((1, 1, 8, 8), 1.5), f, **weights)
    with pytest.raises(InputError, match="NaN"):
        method(torch.full((1, 1, 8, 8), float("nan")), f, **weights)
    with pytest.raises(InputError, match="y has shape"):  # G's images are 16x16, which f makes 4x4
        method(torch.rand(1, 1, 8, 8), f, SimpleNamespace(channels=1, resolution=16), **weights)
    bad = {"dps": {"weight": -1.0}, "diffpir": {"zeta": 1.5}, "tv": {"lambda_reg": 0}, "dip": {"iterations": 0}}[name]
    with pytest.raises(InputError, match=next(iter(bad))):
        method(torch.rand(1, 1, 8, 8), f, **weights, **bad)


@needs_deepinv
@pytest.mark.parametrize("sampler", ["dps", "diffpir"])
def test_the_samplers_refuse_images_the_denoiser_was_not_trained_on(sampler, tiny_weights):
    with pytest.raises(InputError, match="trained on 32x32 grayscale"):
        posterior_draws(torch.rand(1, 1, 4, 4), Downsample(4), sampler=sampler, weights=tiny_weights)
    with pytest.raises(InputError, match="Unknown diffusion sampler 'ddrm'"):
        posterior_draws(torch.rand(1, 1, 8, 8), Downsample(4), sampler="ddrm", weights=tiny_weights)
    with pytest.raises(InputError, match=f"{sampler} has no option 'lambda_reg'; its options are steps, "):
        posterior_draws(torch.rand(1, 1, 8, 8), Downsample(4), sampler=sampler, weights=tiny_weights, lambda_reg=1.0)
    with pytest.raises(InputError, match="draws must be a positive whole number"):
        posterior_draws(torch.rand(1, 1, 8, 8), Downsample(4), sampler=sampler, draws=0, weights=tiny_weights)


@needs_deepinv
@pytest.mark.parametrize("sampler", ["dps", "diffpir"])
def test_sampler_draws_follow_the_seed_and_their_mean_is_the_output(sampler, val_images):
    f = Downsample(4)
    y = f(val_images[:2]).clamp(0, 1)
    options = {"steps": 4}
    state = torch.get_rng_state()
    draws = posterior_draws(y, f, sampler=sampler, draws=3, seed=5, **options)
    assert torch.equal(torch.get_rng_state(), state)
    assert draws.shape == (3, 2, 1, 32, 32) and draws.min() >= 0 and draws.max() <= 1
    again = posterior_draws(y, f, sampler=sampler, draws=2, seed=6, **options)
    torch.testing.assert_close(again, draws[1:])  # draw k is seeded seed + k
    assert not torch.allclose(draws[0], draws[1])
    details = {}
    mean = baselines.get(sampler)(y, f, draws=3, seed=5, details=details, **options)
    torch.testing.assert_close(mean, draws.mean(0))
    assert details["draws"] == 3 and details["mean_std"].shape == (2,)
    torch.testing.assert_close(details["mean_std"], draws.std(0).flatten(1).mean(1))


@needs_deepinv
def test_dps_guidance_pulls_the_draws_towards_the_data(val_images):
    f = Downsample(4)
    y = f(val_images[:4]).clamp(0, 1)
    residual = {}
    for weight in (1e-6, 300.0):
        x = baselines.get("dps")(y, f, steps=20, weight=weight)
        residual[weight] = float((f(x) - y).square().mean().sqrt())
    assert residual[300.0] < residual[1e-6] / 2


@needs_deepinv
def test_diffpir_keeps_the_observed_pixels_of_an_inpainting(val_images):
    masks = cyclic_masks(4, 32)
    f = Mask(masks)
    y = f(val_images[:4])
    x = baselines.get("diffpir")(y, f, steps=10, sigma=0.005)
    observed_error = float(((x - val_images[:4]) * masks).abs().sum() / masks.sum())
    assert observed_error < 0.02
    unconditional = baselines.get("diffpir")(y, f, steps=10, sigma=10.0)  # the data weigh almost nothing
    assert float(((unconditional - val_images[:4]) * masks).abs().sum() / masks.sum()) > 5 * observed_error


@needs_deepinv
def test_tv_recovers_a_piecewise_constant_image():
    truth = _edge_image()
    masks = torch.ones_like(truth)
    masks[..., 12:20, 4:28] = 0  # a band across the rectangle and the ground
    f = Mask(masks)
    x = baselines.get("tv")(f(truth), f, lambda_reg=0.1, iterations=300)
    band = masks == 0
    zero_filling = float(truth[band].mean())  # what filling the band with 0 misses per pixel: 0.45
    assert float((x - truth).abs()[band].mean()) < zero_filling / 5  # filled from the straight edges around it
    smooth = baselines.get("tv")(Downsample(4)(truth).clamp(0, 1), Downsample(4), lambda_reg=1e-4, iterations=300)
    assert float((Downsample(4)(smooth) - Downsample(4)(truth)).abs().max()) < 0.02  # a small lambda fits y


@needs_deepinv
def test_dip_fits_the_data_of_each_image_and_follows_its_seed(val_images):
    masks = cyclic_masks(2, 32)
    f = Mask(masks)
    y = f(val_images[:2])
    x = baselines.get("dip")(y, f, iterations=60, channels=16, layers=3, lr=0.02)
    assert x.shape == (2, 1, 32, 32)
    fit = float(((x - val_images[:2]) * masks).square().sum() / masks.sum())
    start = float(((0.5 - val_images[:2]) * masks).square().sum() / masks.sum())
    assert fit < start / 4
    again = baselines.get("dip")(y[1:], Mask(masks[1:]), iterations=60, channels=16, layers=3, lr=0.02)
    torch.testing.assert_close(again, x[1:], atol=1e-4, rtol=0)  # each image alone gives the same result
