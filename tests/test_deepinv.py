"""deepinv's physics as f and BRGM as a deepinv reconstructor, with the real deepinv package: the same
measurement and reconstruction as our operators where the kernels agree, the structure the adapter
reads (observed outputs, task, noise level), its refusals, and BRGM in deepinv's own test loop.

(The adapter's operators are also in the property tests of tests/test_forward.py: adjoint, F F^T, leverage.)"""

import subprocess
import sys

import pytest
import torch
from conftest import sample_images, tiny_generator

deepinv = pytest.importorskip("deepinv", reason="deepinv is not installed (pip install 'brgm-pyro[deepinv]')")
from deepinv import physics as dp  # noqa: E402
from deepinv.physics.functional import gaussian_blur  # noqa: E402

import brgm_pyro as bp  # noqa: E402
from brgm_pyro import evaluation, io  # noqa: E402
from brgm_pyro.dataset.run import reconstruct_dataset  # noqa: E402
from brgm_pyro.deepinv import BRGM  # noqa: E402
from brgm_pyro.errors import InputError  # noqa: E402
from brgm_pyro.forward import Blur, Compose, Downsample, Mask, PhysicsOperator, as_operator  # noqa: E402
from brgm_pyro.forward.deepinv_physics import NonlinearPhysics  # noqa: E402

SIZE = 16
IMAGE = (1, SIZE, SIZE)
STEPS = 5


@pytest.fixture(scope="module")
def G():
    generator = tiny_generator(SIZE).requires_grad_(False)
    generator.compute_w_stats(num_samples=256)
    return generator


@pytest.fixture(scope="module")
def x(G):
    return sample_images(G, 2, seed=3)


def _mask(size, seed):
    return (torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed)) > 0.3).float()


def _bicubic():
    return dp.Downsampling(IMAGE, "bicubic", 2, padding="reflect")


def _gaussian():
    return dp.Downsampling(IMAGE, "gaussian", 2, padding="reflect")


def _blur_fft():
    return dp.BlurFFT(IMAGE, filter=gaussian_blur(sigma=(1.0, 1.0)))


# name -> (deepinv's physics, our operator with the same kernel). deepinv's Downsampling samples output i at
# input pixel i * factor: the phase of our Downsample with an explicit kernel at factor 2 only.
PAIRS = {
    "downsampling-bicubic-x2": lambda: (_bicubic(), Downsample(2, _bicubic().filter[0, 0])),
    "downsampling-gaussian-x2": lambda: (_gaussian(), Downsample(2, _gaussian().filter[0, 0])),
    "inpainting": lambda: (dp.Inpainting(IMAGE, mask=_mask(SIZE, 1)), Mask(_mask(SIZE, 1)[0, 0])),
    "blurfft": lambda: (_blur_fft(), Blur(_blur_fft().filter[0, 0], padding="circular")),
    "downsampling-then-inpainting": lambda: (
        dp.Inpainting((1, SIZE // 2, SIZE // 2), mask=_mask(SIZE // 2, 2)) * _bicubic(),
        Compose(Downsample(2, _bicubic().filter[0, 0]), Mask(_mask(SIZE // 2, 2)[0, 0])),
    ),
    "blurfft-then-downsampling": lambda: (
        _gaussian() * _blur_fft(),
        Compose(Blur(_blur_fft().filter[0, 0], padding="circular"), Downsample(2, _gaussian().filter[0, 0])),
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_same_measurement_and_reconstruction_as_our_operator(name, G, x):
    physics, ours = PAIRS[name]()
    f = as_operator(physics, IMAGE)
    y = physics(x)  # deepinv's measurement (its noise model: none)
    torch.testing.assert_close(y, ours(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(f.observed(x.shape).expand(y.shape), ours.observed(x.shape).expand(y.shape))
    torch.testing.assert_close(f.adjoint(y), ours.adjoint(y), atol=1e-6, rtol=0)
    theirs = bp.reconstruct(y, physics, G, steps=STEPS, progress=False)
    mine = bp.reconstruct(y, ours, G, steps=STEPS, progress=False)
    assert (theirs.image - mine.image).abs().max() <= 1e-4
    assert (theirs.w - mine.w).abs().max() <= 1e-4


def test_the_posterior_with_the_reach_is_that_of_our_mask(G, x):
    """The reach term needs f's adjoint and F F^T: an Inpainting gives those of our Mask, so the same draws."""
    G.card = {"sigma_reach": 0.1}
    try:
        physics = dp.Inpainting(IMAGE, mask=_mask(SIZE, 4))
        y = physics(x)
        options = dict(num_samples=4, map_schedule=bp.MAPSchedule(steps=3), progress=False, seed=1)
        theirs = bp.sample_posterior(y, physics, G, **options)
        mine = bp.sample_posterior(y, Mask(_mask(SIZE, 4)[0, 0]), G, **options)
    finally:
        del G.card
    assert theirs.settings["model"] == "reach" and theirs.notes == () and theirs.task == "inpaint"
    assert (theirs.mean - mine.mean).abs().max() <= 1e-4 and (theirs.std - mine.std).abs().max() <= 1e-4
    torch.testing.assert_close(theirs.unpinned, mine.unpinned)


def test_deepinv_bicubic_is_not_pillows_so_it_has_no_task(x):
    """deepinv's bicubic filter at x4 samples another phase than Pillow's: a different operator, whose
    measurements a calibration for Downsample(4) does not describe (docs/results/deepinv.md)."""
    physics = dp.Downsampling(IMAGE, "bicubic", 4)
    assert (physics.A(x) - Downsample(4)(x)).abs().max() > 0.05
    assert as_operator(physics, IMAGE).task is None
    assert Downsample(4).task == "superres-x4"
    # A Downsampling that is ours gets our task: block means at x2 are the box kernel.
    box = dp.Downsampling(IMAGE, torch.ones(1, 1, 2, 2) / 4, 2)
    torch.testing.assert_close(box.A(x), Downsample(2, "box")(x))
    assert as_operator(box, IMAGE).task == "superres-x2-box"
    assert as_operator(dp.Inpainting(IMAGE, mask=_mask(SIZE, 1)), IMAGE).task == "inpaint"
    assert as_operator(dp.Inpainting(IMAGE, mask=0.5 * _mask(SIZE, 1)), IMAGE).task is None  # a weighting, not a mask


def test_the_physics_noise_level_is_the_default_sigma_pixel(G, x):
    physics = dp.Downsampling(IMAGE, "bicubic", 2, noise_model=dp.GaussianNoise(sigma=0.07))
    y = physics(x)
    assert y.max() > 1  # deepinv's bicubic lobes and the noise leave [0, 1]: y is data, and accepted
    assert bp.reconstruct(y, physics, G, steps=1, progress=False).params.sigma_pixel == pytest.approx(0.07)
    given = bp.BRGMParams(sigma_pixel=0.2)
    assert bp.reconstruct(y, physics, G, params=given, steps=1, progress=False).params.sigma_pixel == 0.2
    default = bp.reconstruct(y, Downsample(2), G, steps=1, progress=False).params.sigma_pixel
    for noise in (dp.ZeroNoise(), dp.GaussianNoise(sigma=torch.tensor([0.05, 0.1])), dp.PoissonNoise()):
        other = dp.Downsampling(IMAGE, "bicubic", 2, noise_model=noise)
        assert as_operator(other, IMAGE).noise_sigma is None
        assert bp.reconstruct(y, other, G, steps=1, progress=False).params.sigma_pixel == default


def test_a_nonlinear_physics_gets_learned_noise_and_one_note(G, x):
    physics = dp.Physics(A=lambda image: image.square())
    assert isinstance(as_operator(physics), NonlinearPhysics)
    y = physics.A(x)
    rec = bp.reconstruct(y, physics, G, steps=2, progress=False)
    assert rec.y_reconstructed.shape == y.shape
    G.card = {"sigma_reach": 0.1}
    try:
        post = bp.sample_posterior(y, physics, G, num_samples=2, map_schedule=bp.MAPSchedule(steps=2),
                                   progress=False)
    finally:
        del G.card
    assert post.settings["model"] == "learned-noise" and post.sigma_reach is None
    assert len(post.notes) == 1 and "NonlinearPhysics" in post.notes[0]


BAD = {
    "stacked": (lambda: dp.Inpainting(IMAGE, mask=0.5).stack(_bicubic()), ["stacked", "compose physics with *"]),
    "vector-measurements": (lambda: dp.CompressedSensing(m=20, img_size=IMAGE), ["(1, 20)", "(B, C, h, w)"]),
    "other-size": (lambda: dp.Inpainting((1, 8, 8), mask=0.5), ["Inpainting", "(1, 16, 16)"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_physics_it_cannot_take_get_one_sentence(name, G, x):
    make, phrases = BAD[name]
    with pytest.raises(InputError) as info:
        bp.reconstruct(x[:, :, :8, :8] if name == "other-size" else x, make(), G, steps=1, progress=False)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    for phrase in phrases:
        assert phrase in message


def test_reconstruct_dataset_takes_a_physics(G, x, tmp_path):
    """Through the Python API (the command line names our tasks): the outputs of the equivalent operator."""
    physics, ours = PAIRS["downsampling-bicubic-x2"]()
    low = physics(x).clamp(0, 1)
    io.ensure_output_dir(tmp_path / "in")
    for i, image in enumerate(low):
        io.write_image(tmp_path / "in" / f"im{i}.png", image)
    generator = bp.save_generator(G, tmp_path / "g.safetensors")
    outputs = {}
    for label, f in (("theirs", physics), ("ours", ours)):
        run = reconstruct_dataset(tmp_path / "in", tmp_path / label, f, bp.load_generator(generator),
                                  schedule=bp.MAPSchedule(steps=STEPS), progress=False)
        assert run.done == 2
        outputs[label] = io.read_images(sorted((tmp_path / label / "images").glob("*_reconstruction.png")))
    assert (outputs["theirs"] - outputs["ours"]).abs().max() <= 1 / 255


def test_evaluate_takes_a_setting_whose_f_is_a_physics(G, x, tmp_path):
    names = ["00000", "00001"]
    method = [evaluation.Method("brgm", "brgm", {"steps": STEPS})]
    tables = {}
    for label, f in zip(("theirs", "ours"), PAIRS["downsampling-gaussian-x2"]()):
        setting = evaluation.Setting("superres", f"gaussian x2 ({label})", lambda _, f=f: f, noise=0.02)
        result = evaluation.evaluate(setting, method, tmp_path / label, G, truth=x, names=names, progress=False)
        tables[label] = result["table"]["brgm"]["per_image"]
    for metric in ("psnr", "data_consistency"):
        assert tables["theirs"][metric] == pytest.approx(tables["ours"][metric], abs=1e-3)


# ----------------------------------------------------------------------------- BRGM as a deepinv model


def test_brgm_is_a_reconstructor_and_a_sampler(G, x):
    physics = dp.Inpainting(IMAGE, mask=_mask(SIZE, 5), noise_model=dp.GaussianNoise(sigma=0.03))
    y = physics(x)
    model = BRGM(G, schedule=bp.MAPSchedule(steps=STEPS), seed=2)
    assert isinstance(model, deepinv.models.Reconstructor)
    with torch.no_grad():  # as deepinv's test loop calls a model
        x_hat = model(y, physics)
    torch.testing.assert_close(x_hat, bp.reconstruct(y, physics, G, steps=STEPS, seed=2, progress=False).image)
    options = dict(num_samples=4, seed=2)
    post = bp.sample_posterior(y, physics, G, map_schedule=bp.MAPSchedule(steps=STEPS), progress=False, **options)
    sampler = BRGM(G, "mean", schedule=bp.MAPSchedule(steps=STEPS), **options)
    mean, var = sampler.sample(y, physics)
    torch.testing.assert_close(mean, post.mean)
    torch.testing.assert_close(var, post.std.square())
    torch.testing.assert_close(sampler(y, physics), post.mean)
    with pytest.raises(InputError, match="'map'"):
        BRGM(G, "median")


def test_brgm_runs_in_deepinvs_test_loop(G, x):
    physics = dp.Downsampling(IMAGE, "bicubic", 2, noise_model=dp.GaussianNoise(sigma=0.02))
    loader = torch.utils.data.DataLoader(deepinv.datasets.TensorDataset(x=x), batch_size=2)
    results = deepinv.test(BRGM(G, schedule=bp.MAPSchedule(steps=20)), loader, physics, online_measurements=True,
                           metrics=[deepinv.metric.PSNR()], show_progress_bar=False, verbose=False)
    # the MAP explains y far better than deepinv's no-learning reconstruction, A^T y
    assert results["PSNR"] > results["PSNR no learning"] + 3


def test_deepinv_stays_out_of_the_core():
    """``import brgm_pyro`` imports no deepinv, and brgm_pyro.deepinv says how to install it where it is missing."""
    code = ("import sys, brgm_pyro; assert 'deepinv' not in sys.modules; sys.modules['deepinv'] = None\n"
            "try:\n    import brgm_pyro.deepinv\nexcept ImportError as err:\n    print(err)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "brgm_pyro.deepinv needs deepinv: install it with pip install 'brgm-pyro[deepinv]'."


def test_the_adapter_keeps_the_physics(x):
    physics = _bicubic()
    f = as_operator(physics, IMAGE)
    assert isinstance(f, PhysicsOperator) and f.physics is physics and as_operator(f) is f
    assert as_operator(Downsample(2)).task == "superres-x2"  # our operators pass through


def test_the_adapters_example_runs():
    import doctest

    from brgm_pyro.forward import deepinv_physics

    result = doctest.testmod(deepinv_physics)
    assert result.attempted > 0 and result.failed == 0
