"""Tests of the corruption operators: properties over all operators, and comparisons with Pillow and scipy."""

import doctest
import importlib

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from brgm_pyro import forward
from brgm_pyro.forward import Blur, Compose, Downsample, Identity, Mask

B, C, H, W = 2, 3, 16, 16
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is ~100x faster than several fighting over shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _per_image_mask():
    """Two different (B, 1, H, W) masks: a random one and a half mask."""
    return torch.stack([_random(1, H, W, seed=1) > 0.3, Mask.half(H, "left").mask[None].bool()])


OPERATORS = {
    "identity": lambda: Identity(),
    "down-box": lambda: Downsample(2, "box"),
    "down-bilinear": lambda: Downsample(2, "bilinear"),
    "down-bicubic": lambda: Downsample(4, "bicubic"),
    "down-gaussian": lambda: Downsample(2, "gaussian", sigma=1.0),
    "down-tensor": lambda: Downsample(2, _random(3, 5, seed=2)),
    "mask-per-image": lambda: Mask(_per_image_mask()),
    "mask-per-channel": lambda: Mask(_random(C, H, W, seed=3) > 0.5),
    "mask-box": lambda: Mask.center_box(H, 6),
    "blur-gaussian": lambda: Blur.gaussian(1.0),
    "blur-circular": lambda: Blur(_random(4, 3, seed=4) - 0.3, padding="circular"),
    "blur-replicate": lambda: Blur(_random(3, 3, seed=5), padding="replicate"),
    "blur-zeros": lambda: Blur(_random(5, 5, seed=6), padding="zeros"),
    "blur-then-down": lambda: Compose(Blur.gaussian(1.0), Downsample(2)),
    "mask-then-down": lambda: Compose(Mask(_per_image_mask()), Downsample(2, "bicubic")),
    "down-then-mask": lambda: Compose(Downsample(2), Mask.half(H // 2, "bottom")),
    "mask-then-blur": lambda: Compose(Mask.center_box(H, 4), Blur.gaussian(0.7)),
    "blur-mask-down-mask": lambda: Compose(
        Blur.gaussian(0.5), Mask.center_box(H, 4), Downsample(2, "box"), Mask.half(H // 2, "top")
    ),
}


def _without_masks(operator):
    """The operator with every Mask replaced by the identity: what f would give with nothing missing."""
    if isinstance(operator, Mask):
        return Identity()
    if isinstance(operator, Compose):
        return Compose(*[_without_masks(op) for op in operator.operators])
    return operator


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(OPERATORS))
def test_operator_properties(name, dtype, device):
    f = OPERATORS[name]().to(device)
    x, z = (_random(B, C, H, W, seed=s).to(device=device, dtype=dtype) for s in (10, 11))
    y = f(x)
    assert y.shape == f.output_shape(x.shape)
    assert y.dtype == dtype and y.device == x.device

    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(f(0.7 * x - 1.3 * z), 0.7 * y - 1.3 * f(z), atol=tol, rtol=tol)

    x_grad = x.clone().requires_grad_(True)
    (f(x_grad) * _random(*y.shape, seed=12).to(y)).sum().backward()
    assert torch.isfinite(x_grad.grad).all() and x_grad.grad.abs().sum() > 0

    observed = f.observed(x.shape, device=device, dtype=dtype)
    assert torch.broadcast_shapes(observed.shape, y.shape) == y.shape
    assert observed.dtype == dtype and observed.device == y.device
    assert ((observed == 0) | (observed == 1)).all()
    # Observed outputs are exactly what f gives with nothing missing; every missing one differs from it.
    change = (y - _without_masks(f)(x)).abs().expand(y.shape)
    observed = observed.expand(y.shape).bool()
    assert (change[observed] <= tol).all()
    if dtype == torch.float64:  # tails of a Gaussian change a missing pixel by less than float32 resolves
        assert (change[~observed] > 1e-14).all()


def test_mask_per_image_honours_the_mask():
    masks = _per_image_mask()
    f = Mask(masks)
    x = _random(B, C, H, W, seed=20)
    noise = _random(B, C, H, W, seed=21)
    y, y_changed = f(x), f(x + noise * ~masks)
    assert torch.equal(y * masks, y_changed * masks)
    assert (y[~masks.expand(y.shape)] == 0).all()
    assert torch.equal(f.observed(x.shape), masks.float())
    for i in range(B):  # each image gets its own mask
        assert torch.equal(y[i], x[i] * masks[i])
    assert not torch.equal(masks[0], masks[1])


def test_observed_of_compositions_by_hand():
    shape = (1, 1, 16, 16)
    box = Compose(Mask.center_box(16, 4), Downsample(2, "box")).observed(shape)
    expected = torch.ones(8, 8)
    expected[3:5, 3:5] = 0  # the box covers input rows/cols 6..9, i.e. blocks 3 and 4
    assert torch.equal(box[0, 0], expected)

    bicubic = Compose(Mask.center_box(16, 4), Downsample(2, "bicubic")).observed(shape)
    expected = torch.ones(8, 8)
    expected[1:7, 1:7] = 0  # output i reads input rows 2i-3 .. 2i+4, which meet 6..9 for i = 1..6
    assert torch.equal(bicubic[0, 0], expected)

    # Signed weights must not cancel: y[j] = x[j + 1] - x[j] reads both missing pixels at j = 4.
    hole = torch.ones(8, 8)
    hole[3, 4:6] = 0
    difference = Compose(Mask(hole), Blur(torch.tensor([[1.0, -1.0]]), padding="replicate"))
    expected = torch.ones(8, 8)
    expected[3, 3:6] = 0
    assert torch.equal(difference.observed((1, 1, 8, 8))[0, 0], expected)

    low_mask = Mask.half(8, "right")
    assert torch.equal(Compose(Downsample(2), low_mask).observed(shape), low_mask.observed((1, 1, 8, 8)))
    assert (Compose(Blur.gaussian(1.0), Downsample(2)).observed(shape) == 1).all()


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (32, 64)])
@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize(
    "kernel, resample",
    [
        ("bicubic", Image.Resampling.BICUBIC),
        ("bilinear", Image.Resampling.BILINEAR),
        ("box", Image.Resampling.BOX),
    ],
)
def test_downsample_matches_pillow_everywhere(size, factor, kernel, resample):
    h, w = size
    image = np.random.default_rng(factor * h + w).random((h, w)).astype(np.float32)
    expected = np.asarray(Image.fromarray(image).resize((w // factor, h // factor), resample))
    ours = Downsample(factor, kernel)(torch.from_numpy(image).double()[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_box_and_ones_kernel_are_block_means(factor):
    x = _random(2, 3, 32, 64, seed=30).double()
    blocks = x.reshape(2, 3, 32 // factor, factor, 64 // factor, factor).mean(dim=(3, 5))
    torch.testing.assert_close(Downsample(factor, "box")(x), blocks, atol=1e-12, rtol=0)
    torch.testing.assert_close(Downsample(factor, torch.ones(factor, factor))(x), blocks, atol=1e-12, rtol=0)


def test_downsample_tensor_kernel_sampling_and_gaussian():
    x = _random(1, 2, 32, 32, seed=31).double()
    torch.testing.assert_close(Downsample(2, torch.ones(1, 1))(x), x[..., ::2, ::2], atol=0, rtol=0)
    # An 8-tap sampled Gaussian in tensor form equals the "gaussian" kernel (truncated at 4 sigma)
    # away from the border, where the two border rules differ.
    taps = torch.arange(8, dtype=torch.float64) - 3.5
    profile = torch.exp(-0.5 * taps**2)
    named = Downsample(2, "gaussian", sigma=1.0)(x)
    explicit = Downsample(2, profile[:, None] * profile[None, :])(x)
    torch.testing.assert_close(named[..., 2:-2, 2:-2], explicit[..., 2:-2, 2:-2], atol=1e-12, rtol=0)


@pytest.mark.parametrize("kernel", ["box", "bilinear", "bicubic", "gaussian"])
def test_downsample_preserves_constants(kernel):
    y = Downsample(4, kernel)(torch.full((1, 1, 32, 32), 0.25, dtype=torch.float64))
    torch.testing.assert_close(y, torch.full((1, 1, 8, 8), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("padding", ["reflect", "replicate", "circular", "zeros"])
def test_blur_delta_is_identity_and_gaussian_keeps_constants(padding):
    x = _random(2, 3, 16, 16, seed=40)
    delta = torch.zeros(5, 3)
    delta[2, 1] = 1
    torch.testing.assert_close(Blur(delta, padding=padding)(x), x, atol=0, rtol=0)
    if padding != "zeros":
        constant = torch.full((1, 2, 16, 16), 0.6)
        torch.testing.assert_close(Blur.gaussian(1.5, padding=padding)(constant), constant)


@pytest.mark.parametrize(
    "padding, mode",
    [("reflect", "mirror"), ("replicate", "nearest"), ("circular", "wrap"), ("zeros", "constant")],
)
def test_blur_matches_scipy_convolve(padding, mode):
    image = np.random.default_rng(41).random((16, 20))
    kernel = np.random.default_rng(42).random((3, 5))  # not symmetric: checks the flip and the centring
    expected = scipy.ndimage.convolve(image, kernel, mode=mode, cval=0.0)
    ours = Blur(torch.from_numpy(kernel), padding=padding)(torch.from_numpy(image)[None, None])[0, 0]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-12)


def test_compose_applies_left_to_right():
    blur, down = Blur.gaussian(1.0), Downsample(2, "bicubic")
    x = _random(2, 1, 32, 32, seed=50)
    y = Compose(blur, down)(x)
    assert y.shape == (2, 1, 16, 16)
    assert Compose(blur, down).output_shape(x.shape) == (2, 1, 16, 16)
    torch.testing.assert_close(y, down(blur(x)), atol=0, rtol=0)
    assert not torch.allclose(y, blur(down(x)), atol=1e-3)


@pytest.mark.parametrize("module", ["base", "resample", "masks", "blur", "compose", "free_form"])
def test_doctest_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"brgm_pyro.forward.{module}"))
    assert result.failed == 0
    assert result.attempted > 0 or module == "free_form"


# ---------------------------------------------------------------- the structure every operator carries


class UserBlur(forward.Operator):
    """A user's operator: only ``forward``; every piece of structure comes from the base class."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", torch.tensor([[0.1, 0.2, 0.05], [0.3, 0.4, 0.1], [0.0, 0.2, 0.1]]))

    def forward(self, x):
        self.check(x)
        b, c, h, w = x.shape
        padded = torch.nn.functional.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
        return torch.nn.functional.conv2d(padded, self.kernel.to(x)[None, None]).reshape(b, c, h, w)


STRUCTURED = {**OPERATORS, "user-operator": lambda: UserBlur(), "user-then-mask": lambda: Compose(UserBlur(), Mask.half(H, "top"))}


def _deepinv_operators():
    """deepinv's physics through the adapter (``forward.as_operator``), one of each kind of structure."""
    from deepinv import physics
    from deepinv.physics.functional import gaussian_blur

    image = (C, H, W)
    low_mask = (_random(1, 1, H // 2, W // 2, seed=7) > 0.3).float()
    bare = physics.LinearPhysics(A=lambda x: 2 * torch.roll(x, 1, -1) - x)  # neither adjoint nor img_size
    return {
        "deepinv-down-bicubic": lambda: forward.as_operator(physics.Downsampling(image, "bicubic", 2), image),
        "deepinv-down-gaussian": lambda: forward.as_operator(
            physics.Downsampling(image, "gaussian", 2, padding="reflect"), image),
        "deepinv-inpaint-per-image": lambda: forward.as_operator(
            physics.Inpainting(image, mask=_per_image_mask().float()), image),
        "deepinv-blurfft-rotated": lambda: forward.as_operator(
            physics.BlurFFT(image, filter=gaussian_blur(sigma=(1.0, 0.5), angle=30.0)), image),
        "deepinv-blur-valid": lambda: forward.as_operator(physics.Blur(_random(1, 1, 3, 3, seed=8))),
        "deepinv-down-then-inpaint": lambda: forward.as_operator(
            physics.Inpainting((C, H // 2, W // 2), mask=low_mask) * physics.Downsampling(image, "bilinear", 2), image),
        "deepinv-inpaint-then-down": lambda: forward.as_operator(
            physics.Downsampling(image, "bicubic", 2, padding="reflect") * physics.Inpainting(image, mask=0.7), image),
        "deepinv-bare-linear": lambda: forward.as_operator(bare, image),
    }


try:
    import deepinv  # noqa: F401
except ImportError:  # the deepinv extra is absent: test_deepinv_operators_join_the_list says so
    pass
else:
    STRUCTURED.update(_deepinv_operators())


def test_deepinv_operators_join_the_list():
    pytest.importorskip("deepinv", reason="deepinv is not installed (pip install 'brgm-pyro[deepinv]'): its operators are left out")
    assert all(name in STRUCTURED for name in _deepinv_operators())


def _dense_per_image(f, shape):
    """F_b of each image b, (B, m, n), by autograd's Jacobian of the whole batch (independent of the
    operators' own structure), with the rows of unobserved outputs dropped."""
    x = torch.zeros(shape, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(f, x)  # (B, c, h, w, B, C, H, W)
    out = f.output_shape(shape)
    jacobian = jacobian.reshape(shape[0], -1, shape[0], torch.Size(shape[1:]).numel())
    observed = f.observed(shape, dtype=torch.float64).expand(out).reshape(shape[0], -1).bool()
    return [jacobian[b, :, b][observed[b]] for b in range(shape[0])], observed


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_adjoint_is_the_transpose(name):
    """<f(a), b> = <a, f.adjoint(b)> for random a and b (the dot-product test)."""
    f = STRUCTURED[name]()
    a = _random(B, C, H, W, seed=30).double()
    b = _random(*f.output_shape(a.shape), seed=31).double() - 0.5
    lhs = (f(a) * b).sum()
    rhs = (a * f.adjoint(b)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-10, abs=1e-12)
    assert f.adjoint(b).shape == a.shape


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_gram_solve_and_log_density_match_the_dense_gaussian(name):
    """log N(v; 0, a F F^T + b I) and (a F F^T + b I)^-1 v over the observed outputs, per image with its
    own b, against the dense matrices."""
    f = STRUCTURED[name]()
    shape = (B, C, H, W)
    dense, observed = _dense_per_image(f, shape)
    a, b = 0.3, torch.tensor([0.02, 0.07], dtype=torch.float64)
    v = _random(*f.output_shape(shape), seed=32).double() - 0.5
    gram = f.gram(shape, dtype=torch.float64)
    density, solution = gram.log_density(v, a, b), gram.solve(v, a, b)
    for i, F in enumerate(dense):
        cov = a * F @ F.T + b[i] * torch.eye(F.shape[0], dtype=torch.float64)
        seen = v[i].flatten()[observed[i]]
        if not len(seen):  # nothing observed (a random mask before a bicubic kernel): a density of nothing
            assert float(density[i]) == 0 and (solution[i] == 0).all()
            continue
        exact = torch.distributions.MultivariateNormal(torch.zeros(len(cov), dtype=torch.float64), cov)
        assert float(density[i]) == pytest.approx(float(exact.log_prob(seen)), rel=1e-8)
        torch.testing.assert_close(solution[i].flatten()[observed[i]], torch.linalg.solve(cov, seen))
        assert (solution[i].flatten()[~observed[i]] == 0).all()


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_leverage_is_the_dense_projection_diagonal(name):
    f = STRUCTURED[name]()
    shape = (B, C, H, W)
    dense, _ = _dense_per_image(f, shape)
    leverage = f.leverage(shape).expand(shape)
    for i, F in enumerate(dense):
        exact = (torch.linalg.pinv(F) @ F).diagonal()
        torch.testing.assert_close(leverage[i].flatten(), exact, atol=1e-7, rtol=0)


@pytest.mark.parametrize("name", ["blur-then-down", "mask-then-down", "user-then-mask", "blur-mask-down-mask",
                                  *(["deepinv-inpaint-then-down"] if "deepinv-inpaint-then-down" in STRUCTURED else [])])
def test_the_iterative_gram_agrees_with_the_dense_one(name):
    """Conjugate gradients solve exactly; stochastic Lanczos quadrature estimates the log-determinant
    within four standard deviations of Hutchinson's estimator, computed from the dense matrix."""
    from brgm_pyro.forward.gram import LANCZOS_PROBES, IterativeGram

    f = STRUCTURED[name]()
    shape = (B, C, H, W)
    observed = f.observed(shape, dtype=torch.float64)
    iterative, exact = IterativeGram(f.tile(1), shape, observed), f.gram(shape, dtype=torch.float64)
    v = _random(*f.output_shape(shape), seed=33).double() - 0.5
    a, b = 0.3, torch.tensor([0.02, 0.07], dtype=torch.float64)
    torch.testing.assert_close(iterative.solve(v, a, b), exact.solve(v, a, b), atol=1e-6, rtol=1e-5)
    approx, truth = iterative.log_density(v, a, b), exact.log_density(v, a, b)
    for i, F in enumerate(_dense_per_image(f, shape)[0]):
        values, vectors = torch.linalg.eigh(a * F @ F.T + b[i] * torch.eye(F.shape[0], dtype=torch.float64))
        log_m = vectors @ torch.diag(values.log()) @ vectors.T
        hutchinson_std = (2 * (log_m.square().sum() - log_m.diagonal().square().sum()) / LANCZOS_PROBES).sqrt()
        # the log-density holds -1/2 log det
        assert float((approx[i] - truth[i]).abs()) <= 4 * 0.5 * float(hutchinson_std) + 1e-8
    # the gradients of the quadratic term are those of the exact solve
    v_grad = v.clone().requires_grad_(True)
    iterative.log_density(v_grad, a, b).sum().backward()
    v_exact = v.clone().requires_grad_(True)
    exact.log_density(v_exact, a, b).sum().backward()
    torch.testing.assert_close(v_grad.grad, v_exact.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_observe_zeroes_what_f_does_not_observe_and_shapes_invert(name):
    f = STRUCTURED[name]()
    x = _random(B, C, H, W, seed=34)
    y = f(x)
    assert f.input_shape(y.shape) == x.shape
    observed = f.observed(x.shape).expand(y.shape)
    hole_content = _random(*y.shape, seed=35) * (1 - observed)
    torch.testing.assert_close(f.observe(y + hole_content), f.observe(y))
    assert (f.observe(y)[observed == 0] == 0).all()
    torch.testing.assert_close(f.observe(y)[observed == 1], y[observed == 1])


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_tile_applies_f_to_a_repeated_batch(name):
    f = STRUCTURED[name]()
    x = _random(B, C, H, W, seed=36)
    torch.testing.assert_close(f.tile(3)(x.repeat(3, 1, 1, 1)), f(x).repeat(3, 1, 1, 1))


@pytest.mark.parametrize("name", list(STRUCTURED))
def test_select_applies_f_to_one_image(name):
    f = STRUCTURED[name]()
    x = _random(B, C, H, W, seed=37)
    for i in range(B):
        torch.testing.assert_close(f.select(i)(x[i : i + 1]), f(x)[i : i + 1])


def test_the_task_families():
    assert Mask.center_box(16, 4).task == "inpaint"
    assert Downsample(4).task == "superres-x4" and Downsample(2, "box").task == "superres-x2-box"
    assert Downsample(2, torch.ones(2, 2)).task is None
    assert Blur.gaussian(1.0).task is None and Compose(Downsample(2)).task is None


x32 = torch.rand(1, 1, 32, 32)

BAD_INPUTS = {
    "factor-does-not-divide": (lambda: Downsample(3)(x32), ["factor 3 does not divide", "32x32"]),
    "unknown-kernel": (lambda: Downsample(2, "lanczos"), ["'lanczos'", "'bicubic'", "'box'", "'gaussian'"]),
    "zero-factor": (lambda: Downsample(0), ["positive integer", "0"]),
    "negative-factor": (lambda: Downsample(-2), ["positive integer", "-2"]),
    "fractional-factor": (lambda: Downsample(2.5), ["positive integer", "2.5"]),
    "gaussian-bad-sigma": (lambda: Downsample(2, "gaussian", sigma=0.0), ["sigma", "positive"]),
    "sigma-without-gaussian": (lambda: Downsample(2, "bicubic", sigma=1.0), ["sigma", "gaussian"]),
    "kernel-sums-to-zero": (lambda: Downsample(2, torch.tensor([[1.0, -1.0]])), ["sums to 0"]),
    "kernel-not-2d": (lambda: Downsample(2, torch.ones(3)), ["2-D", "(3)"]),
    "kernel-too-large": (lambda: Downsample(2, torch.ones(70, 3))(x32), ["70 pixels", "reflect padding"]),
    "mask-size": (lambda: Mask(torch.ones(16, 16))(x32), ["Mask of size 16x16", "image size 32x32"]),
    "mask-values": (lambda: Mask(torch.full((32, 32), 0.5)), ["0 (missing) or 1 (observed)"]),
    "mask-channels": (lambda: Mask(torch.ones(3, 32, 32))(x32), ["3 channels", "images have 1"]),
    "mask-batch": (lambda: Mask(torch.ones(4, 1, 32, 32))(x32), ["4 per-image masks", "batch has 1"]),
    "mask-ndim": (lambda: Mask(torch.ones(32)), ["(H, W)"]),
    "mask-after-downsample": (
        lambda: Compose(Downsample(2), Mask(torch.ones(32, 32)))(x32),
        ["Mask of size 32x32", "image size 16x16"],
    ),
    "input-3d": (lambda: Identity()(torch.rand(1, 32, 32)), ["(B, C, H, W)", "3-D"]),
    "input-integer": (
        lambda: Downsample(2)(torch.ones(1, 1, 32, 32, dtype=torch.uint8)),
        ["floating", "uint8"],
    ),
    "observed-bad-shape": (lambda: Identity().observed((32, 32)), ["(B, C, H, W)", "(32, 32)"]),
    "blur-padding-name": (lambda: Blur(torch.ones(3, 3), padding="mirror"), ["'mirror'", "'reflect'"]),
    "blur-kernel-too-large": (lambda: Blur(torch.ones(3, 71))(x32), ["71 pixels", "reflect padding"]),
    "blur-bad-sigma": (lambda: Blur.gaussian(-1.0), ["sigma", "positive"]),
    "blur-even-size": (lambda: Blur.gaussian(1.0, size=4), ["odd"]),
    "box-too-large": (lambda: Mask.center_box(8, 10), ["10x10", "8x8"]),
    "half-side": (lambda: Mask.half(8, "middle"), ["'middle'", "'left'"]),
    "compose-empty": (lambda: Compose(), ["at least one operator"]),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gets_one_clear_sentence(name):
    action, phrases = BAD_INPUTS[name]
    with pytest.raises(ValueError) as info:
        action()
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    for phrase in phrases:
        assert phrase in message


@pytest.mark.parametrize(
    "action",
    [lambda: Identity()(np.zeros((1, 1, 4, 4))), lambda: Blur([[1.0]]), lambda: Compose(torch.nn.Identity())],
)
def test_wrong_types_raise_type_error(action):
    with pytest.raises(TypeError):
        action()
