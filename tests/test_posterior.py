"""Posterior sampling: exactness on a linear-Gaussian model, shapes and ranges, diagnostics, variants, errors."""

import inspect
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import sample_images, tiny_generator
from torch import nn

import brgm_pyro as bp
from brgm_pyro import forward as fw
from brgm_pyro.inference import laplace
from brgm_pyro.inference.mcmc import MCMCSettings, run_mcmc
from brgm_pyro.inference.svi import SVISettings
from brgm_pyro.models import brgm, variants
from brgm_pyro.models.unknown_blur import UnknownBlur
from brgm_pyro.plotting import colorize, plot_posterior, save_uncertainty_maps, uncertainty_maps
from brgm_pyro.posterior import Posterior
from brgm_pyro.problem import prepare_problem
from brgm_pyro.sampling import sample_posterior
from brgm_pyro.stylegan2 import to_unit


class LinearGenerator(nn.Module):
    """A "generator" linear in w: synthesis(w) = A vec(w) + b, so that with kappa = 0 and a linear f
    the posterior of w is Gaussian with a closed form."""

    def __init__(self, resolution: int = 4, scale: float = 0.5, seed: int = 0, num_ws: int = 2, w_dim: int = 3):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.num_ws, self.w_dim, self.resolution, self.channels = num_ws, w_dim, resolution, 1
        self.config = {"kind": "linear", "num_ws": num_ws, "w_dim": w_dim, "resolution": resolution}
        self.register_buffer("A", scale * torch.randn(resolution**2, num_ws * w_dim, generator=gen))
        self.register_buffer("b", 0.1 * torch.randn(resolution**2, generator=gen))
        self.register_buffer("w_avg", 0.3 * torch.randn(w_dim, generator=gen))
        self.register_buffer("w_std", torch.tensor(0.5))

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        return (w.flatten(-2) @ self.A.T + self.b).reshape(-1, 1, self.resolution, self.resolution)


def linear_problem(G: LinearGenerator, f: fw.Operator, sigma: float, seed: int = 1):
    """y = f(G(w_true)) + N(0, sigma^2) on the observed pixels, w_true from the prior; returns y and the
    exact posterior of vec w (mean, covariance, precision), with F the matrix of the linear f."""
    gen = torch.Generator().manual_seed(seed)
    w_true = G.w_avg + G.w_std * torch.randn(1, G.num_ws, G.w_dim, generator=gen)
    y_clean = f(to_unit(G.synthesis(w_true)))
    observed = f.observed((1, 1, G.resolution, G.resolution)).expand_as(y_clean)
    y = ((y_clean + sigma * torch.randn(y_clean.shape, generator=gen)) * observed).clamp(0, 1)
    n = G.resolution**2
    F = f(torch.eye(n).reshape(n, 1, G.resolution, G.resolution)).reshape(n, -1).T[observed.flatten().bool()]
    H, c = F @ G.A / 2, F @ (G.b + 1) / 2
    precision = torch.eye(H.shape[1]) / G.w_std**2 + H.T @ H / sigma**2
    cov = torch.linalg.inv(precision)
    y_observed = y.flatten()[observed.flatten().bool()]
    mean = cov @ (G.w_avg.repeat(G.num_ws) / G.w_std**2 + H.T @ (y_observed - c) / sigma**2)
    correlation = cov / torch.outer(cov.diag().sqrt(), cov.diag().sqrt())
    assert (correlation - torch.eye(H.shape[1])).abs().max() > 0.3, "the test needs a correlated posterior"
    return y, mean, cov, precision


@pytest.fixture(scope="module")
def superres():
    """4 noisy observations (2x2 box downsampling) of a 4x4 image linear in 6 latents: the data
    constrain some directions of w, the prior the others, and the posterior is correlated."""
    G, f, sigma = LinearGenerator(), fw.Downsample(2, "box"), 0.1
    params = bp.BRGMParams(sigma_pixel=sigma, kappa=0.0)
    y, mean, cov, precision = linear_problem(G, f, sigma)
    rec = bp.reconstruct(y, f, G, params=params, perceptual=None, steps=100, lr=0.05, progress=False)
    return dict(G=G, f=f, y=y, params=params, map_result=rec, model="brgm"), mean, cov, precision


def _moments(post: Posterior) -> tuple[torch.Tensor, torch.Tensor]:
    w = post.w_samples[:, 0].flatten(1)
    return w.mean(0), w.std(0)


def test_svi_normal_finds_the_mean_field_optimum(superres):
    """For a Gaussian posterior N(m, P^-1) the best diagonal Gaussian has mean m and std 1 / sqrt(P_ii)."""
    problem, mean, cov, precision = superres
    # 2,000 draws: the Monte Carlo error of each std is 1.6%, what is left is the fit's
    post = sample_posterior(**problem, method="svi", num_samples=2000, perceptual=None, guide="normal",
                            steps=300, final_lr_ratio=0.01, progress=False)
    w_mean, w_std = _moments(post)
    assert ((w_mean - mean) / cov.diag().sqrt()).abs().max() < 0.25
    assert torch.allclose(w_std, precision.diag().rsqrt(), rtol=0.15)
    assert (w_std < 0.95 * cov.diag().sqrt()).any(), "mean field understates the correlated marginals"


def test_svi_laplace_guide_finds_the_correlated_posterior(superres):
    """In the Laplace-whitened coordinates a diagonal Gaussian is a full-covariance one in w: on a
    Gaussian posterior the guide recovers the exact marginal std, which mean field understates."""
    problem, mean, cov, _ = superres
    post = sample_posterior(**problem, method="svi", num_samples=400, perceptual=None, guide="laplace",
                            steps=200, final_lr_ratio=0.01, progress=False)
    w_mean, w_std = _moments(post)
    exact_std = cov.diag().sqrt()
    assert ((w_mean - mean) / exact_std).abs().max() < 0.25
    assert torch.allclose(w_std, exact_std, rtol=0.15)
    w = post.w_samples[:, 0].flatten(1)
    empirical = torch.corrcoef(w.T)
    exact = cov / torch.outer(exact_std, exact_std)
    assert (empirical - exact).abs().max() < 0.2


def test_svi_laplace_guide_refuses_a_latent_space_too_big_for_a_dense_hessian():
    G = LinearGenerator(resolution=4, num_ws=2, w_dim=2100)
    y = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="guide='laplace' needs the dense Hessian of 4200 latent"):
        sample_posterior(y, fw.Identity(), G, "svi", 2, model="brgm", perceptual=None, guide="laplace",
                         map_schedule=bp.MAPSchedule(steps=1), progress=False, sigma_reach=None)


def test_svi_auto_guide_is_laplace_up_to_the_dense_hessians_limit_and_mean_field_above():
    G, f = LinearGenerator(), fw.Downsample(2, "box")
    common = dict(model="brgm", perceptual=None, map_schedule=bp.MAPSchedule(steps=1), steps=2, sigma_reach=None,
                  search=None, progress=False)
    y = torch.rand(2, 1, 2, 2)
    one = sample_posterior(y[:1], f, G, "svi", 2, **common)
    assert one.settings["inference"]["guide"] == "laplace"
    # each image of a batch has its own guide at each of its modes
    assert sample_posterior(y, f, G, "svi", 2, **common).settings["inference"]["guide"] == "laplace"
    wide = LinearGenerator(num_ws=2, w_dim=2100)
    assert sample_posterior(y[:1], f, wide, "svi", 2, **common).settings["inference"]["guide"] == "normal"
    chosen = sample_posterior(y[:1], f, G, "svi", 2, guide="lowrank", **common).settings["inference"]["guide"]
    assert chosen == "lowrank"


class _Square(torch.autograd.Function):
    """x^2 with a backward but no forward-mode derivative (no ``jvp``), like a custom op of a user's generator."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


@pytest.mark.parametrize("custom_op", [False, True], ids=["forward-over-reverse", "fallback"])
def test_dense_hessian_matches_autograd_on_a_non_quadratic_function(custom_op):
    gen = torch.Generator().manual_seed(0)
    A, z0 = torch.randn(7, 10, generator=gen, dtype=torch.float64), torch.randn(10, generator=gen, dtype=torch.float64)

    def fn(z):
        square = _Square.apply(z) if custom_op else z * z
        return torch.log1p((A @ z).square()).sum() + (z.sin() * square).sum()

    expected = torch.autograd.functional.hessian(fn, z0)
    assert torch.allclose(laplace.dense_hessian(fn, z0, chunk=3), expected, atol=1e-10)
    assert torch.allclose(laplace.dense_hessian(fn, z0, chunk=4, mode="reverse"), expected, atol=1e-10)
    if custom_op:
        with pytest.raises(RuntimeError, match="setup_context"):
            laplace.dense_hessian(fn, z0, mode="forward")
    else:
        assert torch.allclose(laplace.dense_hessian(fn, z0, chunk=10, mode="forward"), expected, atol=1e-10)


def test_nuts_matches_the_exact_posterior(superres):
    problem, mean, cov, _ = superres
    post = sample_posterior(**problem, method="nuts", num_samples=80, perceptual=None, num_chains=2,
                            warmup_steps=40, progress=False)
    assert post.num_samples == 160 and post.num_chains == 2
    w_mean, w_std = _moments(post)
    exact_std = cov.diag().sqrt()
    assert ((w_mean - mean) / exact_std).abs().max() < 0.3
    assert torch.allclose(w_std, exact_std, rtol=0.2)
    diagnostics = post.diagnostics
    assert diagnostics["max_r_hat"] < 1.1 and diagnostics["divergence_fraction"] <= 0.01
    assert set(post.sample_stats) == {"diverging", "step_size", "n_steps", "tree_depth"}
    for value in post.sample_stats.values():
        assert value.shape == (2, 80)
    assert (post.sample_stats["tree_depth"] <= MCMCSettings.max_tree_depth).all() and (post.sample_stats["n_steps"] >= 1).all()


@pytest.fixture(scope="module")
def ill_conditioned():
    """As ``superres`` with a steeper generator and less noise: the exact posterior's covariance has a
    condition number of about 570, with axes that are not the coordinate axes."""
    G, f, sigma = LinearGenerator(scale=1.0), fw.Downsample(2, "box"), 0.02
    params = bp.BRGMParams(sigma_pixel=sigma, kappa=0.0)
    y, mean, cov, precision = linear_problem(G, f, sigma)
    eigenvalues = torch.linalg.eigvalsh(cov)
    assert eigenvalues.max() / eigenvalues.min() > 100, "the test needs an ill-conditioned posterior"
    rec = bp.reconstruct(y, f, G, params=params, perceptual=None, steps=200, lr=0.05, progress=False)
    return dict(G=G, f=f, y=y, params=params, map_result=rec, model="brgm", perceptual=None), mean, cov, precision


def test_laplace_preconditioner_whitens_a_gaussian_posterior(ill_conditioned):
    """For a Gaussian posterior the Hessian at the MAP is the exact precision, so the whitened target is
    a standard normal: NUTS takes fewer, longer steps than on the raw latents and still samples the
    exact posterior (the change of variables is affine, its Jacobian constant)."""
    problem, mean, cov, precision = ill_conditioned
    kwargs = prepare_problem(problem["y"], problem["f"], problem["G"], problem["params"], None).model_kwargs()
    settings = MCMCSettings(num_samples=2, warmup_steps=2, num_chains=1, precondition="laplace")
    run = run_mcmc(brgm.model, kwargs, {"w": problem["map_result"].w.clone()}, settings, progress=False)
    assert torch.allclose(run.hessian_eigenvalues, torch.linalg.eigvalsh(precision), rtol=1e-3)

    common = dict(method="nuts", num_samples=100, num_chains=2, warmup_steps=100, sigma_reach=None, progress=False)
    whitened = sample_posterior(**problem, **common, precondition="laplace")
    raw = sample_posterior(**problem, **{**common, "num_samples": 30}, precondition=None)
    w_mean, w_std = _moments(whitened)
    exact_std = cov.diag().sqrt()
    assert ((w_mean - mean) / exact_std).abs().max() < 0.3
    assert torch.allclose(w_std, exact_std, rtol=0.2)
    assert whitened.diagnostics["max_r_hat"] < 1.1 and whitened.diagnostics["precondition_s"] > 0
    # Gradient evaluations per draw: about 6 whitened against 45 raw (seed 0).
    assert whitened.diagnostics["mean_n_steps"] < 0.5 * raw.diagnostics["mean_n_steps"]
    assert whitened.diagnostics["mean_step_size"] > 3 * raw.diagnostics["mean_step_size"]


def test_laplace_preconditioner_refuses_a_latent_space_too_large(ill_conditioned, monkeypatch):
    problem, *_ = ill_conditioned
    monkeypatch.setattr(laplace, "MAX_LAPLACE_DIM", 4)
    with pytest.raises(ValueError, match="dense Hessian of 6 latent coordinates \\(at most 4\\); pass precondition=None"):
        sample_posterior(**problem, method="nuts", num_samples=2, warmup_steps=2, precondition="laplace",
                         sigma_reach=None, progress=False)
    # "auto" falls back to the raw latents there.
    post = sample_posterior(**problem, method="nuts", num_samples=2, warmup_steps=2, sigma_reach=None, progress=False)
    assert "precondition_s" not in post.diagnostics


def test_svi_full_rank_guide_finds_the_exact_marginals_of_an_inpainting():
    """A 2x2 hole in a 4x4 image: the low-rank guide of full rank recovers the exact marginal std of
    each w coordinate and, through the images of its draws, of each pixel, hole and observed."""
    G, f, sigma = LinearGenerator(scale=0.15), fw.Mask.center_box(4, 2), 0.02
    params = bp.BRGMParams(sigma_pixel=sigma, kappa=0.0)
    y, mean, cov, _ = linear_problem(G, f, sigma)
    post = sample_posterior(y, f, G, "svi", 200, model="brgm", params=params, perceptual=None,
                            map_schedule=bp.MAPSchedule(steps=100), guide="lowrank", rank=6, steps=300, lr=0.1,
                            final_lr_ratio=0.01, progress=False)
    w_mean, w_std = _moments(post)
    exact_std = cov.diag().sqrt()
    assert ((w_mean - mean) / exact_std).abs().max() < 0.3
    assert torch.allclose(w_std, exact_std, rtol=0.2)
    assert 0 < post.samples.min() and post.samples.max() < 1  # no clamping: the pixels are linear in w
    pixel_std = (G.A @ cov @ G.A.T / 4).diag().sqrt().reshape(1, 1, 4, 4)
    assert torch.allclose(post.std, pixel_std, rtol=0.2)


def test_learned_noise_recovers_the_noise_level():
    """y = f(G(w)) + noise of a known sigma; the prior's median is 2x off, the posterior finds sigma."""
    G = LinearGenerator(resolution=12, seed=2)
    f = fw.Identity()
    true_sigma = 0.05
    gen = torch.Generator().manual_seed(3)
    w_true = G.w_avg + G.w_std * torch.randn(1, G.num_ws, G.w_dim, generator=gen)
    x = to_unit(G.synthesis(w_true))
    y = (x + true_sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    params = bp.BRGMParams(sigma_pixel=2 * true_sigma, kappa=0.0)
    post = sample_posterior(y, f, G, "svi", 50, model="learned-noise", params=params, perceptual=None,
                            map_schedule=bp.MAPSchedule(steps=50), steps=150, progress=False)
    sigma = post.latents["sigma_pixel"]
    assert sigma.shape == (50, 1)
    assert abs(float(sigma.mean()) / true_sigma - 1) < 0.25
    assert "sigma_pixel" in post.inference_data.posterior
    assert post.summary()["images"][0]["sigma_pixel"]["mean"] == pytest.approx(float(sigma.mean()))


def test_collapsed_learned_noise_integrates_sigma_out():
    """The collapsed model's log density at w equals log of the joint's integral over sigma_pixel
    (quadrature in log sigma), and its conditional draws of sigma_pixel follow p(sigma | w, y)."""
    from brgm_pyro.models import learned_noise

    G = LinearGenerator(resolution=8, seed=4)
    f = fw.Mask.center_box(8, 4)
    params = bp.BRGMParams(sigma_pixel=0.05, kappa=0.3)
    gen = torch.Generator().manual_seed(5)
    w = (G.w_avg + G.w_std * torch.randn(1, G.num_ws, G.w_dim, generator=gen)).double()
    G = G.double()
    x = to_unit(G.synthesis(w))
    y = (f(x) + 0.08 * torch.randn(f(x).shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    kwargs = prepare_problem(y, f, G, params, None).model_kwargs()
    w_other = w + 0.1 * torch.randn(w.shape, generator=gen, dtype=torch.float64)

    def log_density(model, values):
        trace = pyro.poutine.trace(pyro.poutine.condition(model, data=values)).get_trace(**kwargs)
        return trace.log_prob_sum()

    for w_at in (w, w_other):
        log_sigma = torch.linspace(math.log(1e-3), math.log(10.0), 20001, dtype=torch.float64)
        joint = torch.stack([log_density(learned_noise.model, {"w": w_at, "sigma_pixel": s.exp()[None]})
                             for s in log_sigma[::20]])
        # integrand in log sigma: p(y, w, sigma) sigma; trapezoid on the coarse grid is enough at 1e-3
        step = float(log_sigma[20] - log_sigma[0])
        integral = torch.logsumexp(joint + log_sigma[::20], 0) + math.log(step)
        collapsed = log_density(learned_noise.collapsed_model, {"w": w_at})
        assert float(collapsed) == pytest.approx(float(integral), abs=1e-3)

    # the conditional: sigma^2 | w, y ~ InverseGamma(a + n/2, b + RSS/2); mean of sigma^2 = (b + RSS/2) / (a + n/2 - 1)
    images = to_unit(G.synthesis(w)).expand(4000, -1, -1, -1)[:, None]
    draws = learned_noise.collapsed.conditional(images, kwargs)["sigma_pixel"]
    assert draws.shape == (4000, 1)
    observed = f.observed(y.shape).expand_as(y).bool()
    rss, n = float((y - f(x))[observed].square().sum()), int(observed.sum())
    a, b = learned_noise.NOISE_PRIOR_DOF / 2, learned_noise.NOISE_PRIOR_DOF * 0.05**2 / 2
    assert float(draws.square().mean()) == pytest.approx((b + rss / 2) / (a + n / 2 - 1), rel=0.03)


def test_learned_noise_samplers_run_on_the_collapsed_model():
    """SVI and NUTS infer w only (the guide has no sigma_pixel) and still return sigma_pixel draws."""
    G = LinearGenerator(resolution=8, seed=6)
    f = fw.Downsample(2, "box")
    gen = torch.Generator().manual_seed(7)
    x = to_unit(G.synthesis(G.w_avg + G.w_std * torch.randn(1, G.num_ws, G.w_dim, generator=gen)))
    y = (f(x) + 0.05 * torch.randn(f(x).shape, generator=gen)).clamp(0, 1)
    params = bp.BRGMParams(sigma_pixel=0.05, kappa=0.0)
    common = dict(model="learned-noise", params=params, perceptual=None, map_schedule=bp.MAPSchedule(steps=30),
                  progress=False, sigma_reach=None)
    svi = sample_posterior(y, f, G, "svi", 8, steps=20, **common)
    nuts = sample_posterior(y, f, G, "nuts", 5, warmup_steps=5, num_chains=2, **common)
    for post in (svi, nuts):
        assert set(post.latents) == {"w", "sigma_pixel"}
        assert post.latents["sigma_pixel"].shape == (post.num_samples, 1) and (post.latents["sigma_pixel"] > 0).all()
    assert "sigma_pixel" in nuts.diagnostics["monitored"] or any("sigma_pixel" in k for k in nuts.diagnostics["monitored"])


@pytest.fixture(scope="module")
def G16():
    return tiny_generator(16).requires_grad_(False)


@pytest.fixture(scope="module")
def inpainting(G16):
    f = fw.Mask.center_box(16, 8)
    x = sample_images(G16, 2, seed=4)
    return f, x, f(x)


QUICK = {
    "svi": {"steps": 20},
    "nuts": {"warmup_steps": 4, "max_tree_depth": 3},
    "hmc": {"warmup_steps": 4, "trajectory_length": 0.02},
}


@pytest.mark.parametrize("method", ["svi", "nuts", "hmc"])
def test_shapes_ranges_and_files(G16, inpainting, method, tmp_path):
    f, x, y = inpainting
    post = sample_posterior(y, f, G16, method, 5, perceptual=None, map_schedule=bp.MAPSchedule(steps=3),
                            progress=False, **QUICK[method])
    draws = 5 if method == "svi" else 10
    assert post.samples.shape == (draws, 2, 1, 16, 16) and post.samples.dtype == torch.float32
    assert post.samples.min() >= 0 and post.samples.max() <= 1
    assert post.w_samples.shape == (draws, 2, G16.num_ws, G16.w_dim)
    assert post.mean.shape == post.std.shape == (2, 1, 16, 16) and (post.std >= 0).all()
    lower, upper = post.interval(0.9)
    assert (lower <= post.quantile(0.5)).all() and (post.quantile(0.5) <= upper).all()
    assert torch.equal(post.quantile(0.0), post.samples.min(0).values)
    # The images are G(w) of the draws of w.
    assert torch.allclose(post.samples[1], to_unit(G16.synthesis(post.w_samples[1]), clamp=True), atol=1e-5)
    data = post.inference_data
    assert data.posterior.sizes["chain"] == post.num_chains and data.posterior.sizes["draw"] == draws // post.num_chains
    assert {"w_monitored", "w_rms_z", "w_layer_rms_z"} <= set(data.posterior.data_vars)
    if method == "svi":
        assert "sample_stats" not in data.groups() and post.loss_trace.shape[-1] == 20
    else:
        assert {"diverging", "step_size", "n_steps"} <= set(data.sample_stats.data_vars)
        assert {"max_r_hat", "min_ess_bulk", "divergences", "monitored"} <= set(post.diagnostics)
    path = post.save_netcdf(tmp_path / "posterior.nc")
    import arviz as az

    loaded = az.from_netcdf(path)
    assert loaded.posterior["image"].shape == (post.num_chains, draws // post.num_chains, 2, 1, 16, 16)
    json.dumps(post.summary())
    assert list(tmp_path.iterdir()) == [path]


def test_inpainting_honours_the_hole(G16, inpainting):
    """The zeros of y in the hole are not data: the posterior there is wider and not pulled to 0."""
    f, x, y = inpainting
    post = sample_posterior(y, f, G16, "svi", 8, model="brgm", perceptual=None,
                            map_schedule=bp.MAPSchedule(steps=20), steps=30, progress=False)
    hole = f.observed(x.shape).expand_as(x) == 0
    assert post.std[hole].mean() > post.std[~hole].mean()
    assert (post.mean - x)[hole].abs().mean() < 0.5 * x[hole].mean()


def test_single_draw_and_batch_of_one(G16, inpainting):
    f, x, y = inpainting
    post = sample_posterior(y[:1], fw.Mask.center_box(16, 8), G16, "svi", 1, perceptual=None,
                            map_schedule=bp.MAPSchedule(steps=2), steps=2, progress=False)
    assert post.samples.shape == (1, 1, 1, 16, 16) and (post.std == 0).all()


@pytest.mark.parametrize("name", variants.available_models())
def test_every_registered_variant_samples(G16, inpainting, name):
    f, x, y = inpainting
    if name == "unknown-blur":  # its f is a blur of unknown width before the known rest
        f = UnknownBlur(f, 1.0)
    reach = 0.05 if name in ("reach", "mapping") else "auto"  # the tiny generator has no card; these need a value
    post = sample_posterior(y, f, G16, "svi", 3, model=name, perceptual=None, sigma_reach=reach,
                            map_schedule=bp.MAPSchedule(steps=3), steps=3, progress=False)
    assert post.settings["model"] == name
    assert torch.isfinite(post.samples).all()
    assert ("sigma_pixel" in post.latents) == (name in ("learned-noise", "reach", "mapping"))
    assert ("sigma_b" in post.latents) == (name == "unknown-blur")
    assert ("z" in post.latents) == (name == "mapping")
    assert post.w_samples.shape == (3, 2, G16.num_ws, G16.w_dim)


def laplace_model(y, forward, generator, params, observed=None, perceptual=None, y_features=None):
    """A user's edit of brgm.model: a Laplace prior on w, nothing else."""
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    with pyro.plate("images", y.shape[0]):
        w = pyro.sample("w", dist.Laplace(prior_loc, generator.w_std / math.sqrt(2)).to_event(2))
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        noise = dist.Normal(forward(x), params.sigma_pixel).mask(observed.bool())
        pyro.sample("y", noise.to_event(3), obs=y)
    return x


def test_any_model_with_the_signature_can_be_passed(G16, inpainting):
    f, x, y = inpainting
    post = sample_posterior(y, f, G16, "svi", 3, model=laplace_model, perceptual=None,
                            map_schedule=bp.MAPSchedule(steps=3), steps=3, progress=False)
    assert post.settings["model"].endswith("laplace_model")
    variants.register_model("laplace-test", laplace_model)
    try:
        assert variants.get_model("laplace-test").model is laplace_model
        with pytest.raises(ValueError, match="already registered"):
            variants.register_model("laplace-test", laplace_model)
    finally:
        del variants.MODELS["laplace-test"]


def wrong_signature(y, f, G):
    return None


def no_latent_w(y, forward, generator, params, observed=None, perceptual=None, y_features=None):
    with pyro.plate("images", y.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(generator.num_ws, generator.w_dim), 1.0).to_event(2))
        pyro.deterministic("image", to_unit(generator.synthesis(z)), event_dim=3)


def no_image_site(y, forward, generator, params, observed=None, perceptual=None, y_features=None):
    with pyro.plate("images", y.shape[0]):
        pyro.sample("w", dist.Normal(generator.w_avg.expand(generator.num_ws, -1), 1.0).to_event(2))


def crashing(y, forward, generator, params, observed=None, perceptual=None, y_features=None):
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"num_samples": 0}, ValueError, "num_samples must be a positive integer"),
        ({"num_samples": -3}, ValueError, "num_samples"),
        ({"num_samples": 2.5}, ValueError, "num_samples"),
        ({"num_samples": True}, ValueError, "num_samples"),
        ({"method": "vi"}, ValueError, "Unknown method 'vi'; choose one of: laplace, svi, nuts, hmc"),
        ({"method": "laplace", "steps": 3}, TypeError, "method='laplace' takes no settings"),
        ({"model": "gaussian-mixture"}, ValueError, "Unknown model 'gaussian-mixture'"),
        ({"model": 3}, TypeError, "registered name, a BRGMModel or a Pyro model"),
        ({"model": wrong_signature}, TypeError, "must take the arguments of brgm.model"),
        ({"model": no_latent_w}, ValueError, "needs a site 'w'"),
        ({"model": no_image_site}, ValueError, "pyro.deterministic\\('image'"),
        ({"model": crashing}, ValueError, "fails on this problem \\(RuntimeError: boom\\)"),
        ({"method": "svi", "guide": "flow"}, ValueError, "Unknown SVI guide 'flow'"),
        ({"method": "svi", "num_chains": 2}, TypeError, "Unknown option\\(s\\) num_chains for method='svi'"),
        ({"method": "nuts", "guide": "normal"}, TypeError, "Unknown option\\(s\\) guide for method='nuts'"),
        ({"method": "nuts", "settings": SVISettings()}, TypeError, "takes settings of type MCMCSettings"),
        ({"method": "svi", "settings": MCMCSettings()}, TypeError, "takes settings of type SVISettings"),
        ({"method": "hmc", "warmup_steps": -1}, ValueError, "warmup_steps must be a non-negative integer"),
        ({"method": "nuts", "precondition": "lowrank"}, ValueError, "Unknown precondition 'lowrank'; choose 'auto'"),
        ({"method": "nuts", "eigen_floor": 0.0}, ValueError, "eigen_floor must lie in \\(0, 1\\]"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
    ],
)
def test_bad_input_gets_a_clear_error(G16, inpainting, kwargs, error, message):
    f, x, y = inpainting
    kwargs = {"method": "svi", "num_samples": 2, **kwargs}
    with pytest.raises(error, match=message):
        sample_posterior(y, f, G16, perceptual=None, map_schedule=bp.MAPSchedule(steps=1), progress=False, **kwargs)


def test_map_result_of_another_problem_is_refused(G16, inpainting):
    f, x, y = inpainting
    rec = bp.reconstruct(y[:1], f, G16, perceptual=None, steps=1, progress=False)
    with pytest.raises(ValueError, match="map_result holds w of shape"):
        sample_posterior(y, f, G16, "svi", 2, perceptual=None, map_result=rec, progress=False)
    with pytest.raises(TypeError, match="ReconstructionResult"):
        sample_posterior(y, f, G16, "svi", 2, perceptual=None, map_result=rec.w, progress=False)


class Halve(nn.Module):
    """A user's corruption that is not an Operator: no adjoint, no F F^T."""

    def forward(self, x):
        return 0.5 * x


def test_default_models():
    """reconstruct (MAP) uses the paper's model; sample_posterior "auto": the reach model for a prior with
    a reach and an f with structure, else the learned-noise variant (with one note when a reach is left
    out); a named or given model is kept."""
    shape = (1, 1, 16, 16)
    box = fw.Mask.center_box(16, 4)
    assert variants.get_model(None).model is brgm.model
    assert inspect.signature(sample_posterior).parameters["model"].default == "auto"
    assert variants.choose("auto", "auto", box, 0.05, shape)[:2] == (variants.MODELS["reach"], 0.05)
    assert variants.choose("auto", "auto", box, None, shape) == (variants.MODELS["learned-noise"], None, ())
    spec, reach, notes = variants.choose("auto", "auto", Halve(), 0.05, shape)
    assert spec.name == "learned-noise" and reach is None and len(notes) == 1 and "Halve" in notes[0]
    assert variants.choose("brgm", "auto", box, 0.05, shape)[:2] == (variants.MODELS["brgm"], 0.05)
    assert variants.choose(brgm.model, None, box, 0.05, shape)[0].name == "brgm"
    assert variants.choose("unknown-blur", "auto", box, 0.05, shape)[1] is None  # f is inferred: no reach
    with pytest.raises(ValueError, match="model='reach' needs the prior's reach"):
        variants.choose("reach", None, box, 0.05, shape)


def test_uncertainty_maps_and_plots(G16, inpainting, tmp_path):
    f, x, y = inpainting
    post = sample_posterior(y, f, G16, "svi", 4, perceptual=None, map_schedule=bp.MAPSchedule(steps=5),
                            steps=5, progress=False)
    maps = uncertainty_maps(post, truth=x)
    assert maps["std"].shape == maps["error"].shape == (2, 3, 16, 16)
    assert maps["std_vmax"] == pytest.approx(float(post.std.max()))
    assert 0 <= maps["error"].min() and maps["error"].max() <= 1
    files = save_uncertainty_maps(post, tmp_path, ["a", "b"], truth=x)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}_{k}.png" for n in "ab" for k in ("mean", "std", "error", "samples", "overview")
    )
    assert set(files[0]) == {"mean", "std", "error", "samples", "overview"}
    ramp = colorize(torch.linspace(0, 2, 16).reshape(4, 4), vmax=1.0)
    assert ramp.shape == (3, 4, 4) and torch.equal(ramp[:, 3, 3], ramp[:, 3, 2])  # clipped at vmax
    with pytest.raises(ValueError, match="one clean image per input"):
        uncertainty_maps(post, truth=x[:1])
    import matplotlib

    matplotlib.use("Agg")
    figure = plot_posterior(post, index=1, truth=x)
    assert len(figure.axes) >= 6


def test_the_map_result_is_left_as_it_was(G16, inpainting):
    f, x, y = inpainting
    rec = bp.reconstruct(y, f, G16, perceptual=None, steps=3, progress=False)
    w = rec.w.clone()
    sample_posterior(y, f, G16, "svi", 2, perceptual=None, map_result=rec, steps=5, progress=False)
    assert torch.equal(rec.w, w)


# ---------------------------------------------------------------- defects found by reading (each failed before its fix)


@pytest.mark.parametrize("f", [fw.Blur.gaussian(1.0), fw.Compose(fw.Blur.gaussian(1.0), fw.Downsample(2))],
                         ids=["blur", "blur-then-downsample"])
def test_the_default_posterior_runs_on_blur(f):
    """A prior with a reach picks the reach model for blur too: F F^T comes from the operator."""
    G = tiny_generator(16).requires_grad_(False)
    G.card = {"sigma_reach": 0.06}
    y = f(sample_images(G, 1, seed=4))
    post = sample_posterior(y, f, G, "svi", 4, perceptual=None, map_schedule=bp.MAPSchedule(steps=3), steps=3,
                            progress=False)
    assert post.settings["model"] == "reach" and post.sigma_reach == 0.06
    assert post.samples.shape == (4, 1, 1, 16, 16) and torch.isfinite(post.samples).all()
    assert post.notes == ()


def model_with_its_own_sentence(y, forward, generator, params, observed=None, perceptual=None, y_features=None):
    from brgm_pyro.errors import InputError

    with pyro.plate("images", y.shape[0]):
        pyro.sample("w", dist.Normal(generator.w_avg.expand(generator.num_ws, -1), 1.0).to_event(2))
        raise InputError("This model needs a sharper prior; pass another one.")


def test_a_models_own_error_arrives_as_one_sentence(G16, inpainting):
    """Pyro appends its trace-shape table to an error raised inside a model; the user gets the sentence."""
    f, x, y = inpainting
    with pytest.raises(ValueError) as info:
        sample_posterior(y, f, G16, "svi", 2, model=model_with_its_own_sentence, perceptual=None, progress=False)
    assert str(info.value) == "This model needs a sharper prior; pass another one."


def test_quantile_and_interval_share_one_rule(G16, inpainting):
    f, x, y = inpainting
    post = sample_posterior(y, f, G16, "svi", 16, perceptual=None, map_schedule=bp.MAPSchedule(steps=3), steps=3,
                            progress=False, calibration=None)
    lower, upper = post.interval(0.9, calibrated=False)
    assert torch.equal(lower, post.quantile(0.05)) and torch.equal(upper, post.quantile(0.95))
    assert torch.equal(post.quantile(0.0), post.samples.min(0).values)
    assert torch.equal(post.quantile(1.0), post.samples.max(0).values)


def test_library_calls_leave_the_users_pyro_parameters_alone(G16, inpainting):
    f, x, y = inpainting
    pyro.clear_param_store()
    mine = pyro.param("my_own", torch.tensor([1.0, 2.0]))
    bp.reconstruct(y, f, G16, perceptual=None, steps=2, progress=False)
    for guide in ("normal", "lowrank", "laplace"):
        sample_posterior(y[:1], f, G16, "svi", 2, perceptual=None, map_schedule=bp.MAPSchedule(steps=2), steps=2,
                         guide=guide, progress=False)
    assert list(pyro.get_param_store().keys()) == ["my_own"]
    assert torch.equal(pyro.param("my_own"), mine)
    pyro.clear_param_store()


def test_dense_hessian_surfaces_errors_other_than_a_missing_forward_rule():
    """An out-of-memory error in forward mode is raised, not taken for "no forward-mode rule" (which
    would run the costlier reverse mode); an operation without a forward-mode rule still falls back
    (test_dense_hessian_matches_autograd_on_a_non_quadratic_function[fallback])."""
    calls = []

    def runs_out_of_memory_once(z):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return z.square().sum()

    with pytest.raises(RuntimeError, match="out of memory"):
        laplace.dense_hessian(runs_out_of_memory_once, torch.ones(3))


class UserMask(fw.Operator):
    """A user's masking operator, not a subclass of Mask: it tells its own task and leverage."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    @property
    def task(self):
        return "inpaint"

    def observed(self, shape, device=None, dtype=torch.float32):
        return self.mask[None, None].to(device=self._device(device), dtype=dtype)

    def forward(self, x):
        self.check(x)
        return x * self.mask.to(x)


def test_the_layers_ask_the_operator_not_its_class(G16):
    """The task family (calibrations), the unpinned pixels (leverage) and the reach (F F^T) come from the
    operator: a user's own operator gets them without being a Mask."""
    box = fw.Mask.center_box(16, 6)
    f = UserMask(box.mask)
    G16.card = {"sigma_reach": 0.06}
    try:
        y = f(sample_images(G16, 1, seed=4))
        post = sample_posterior(y, f, G16, "svi", 4, perceptual=None, map_schedule=bp.MAPSchedule(steps=2), steps=2,
                                progress=False)
    finally:
        G16.card = None
    assert post.task == "inpaint" and post.settings["model"] == "reach"
    assert torch.equal(post.unpinned[0, 0], box.mask == 0)
