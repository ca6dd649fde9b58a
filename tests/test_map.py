import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import sample_images, tiny_generator
from pyro import poutine

import brgm_pyro as bp
from brgm_pyro import forward as fw
from brgm_pyro.errors import InputError
from brgm_pyro.inference.map import MAPSchedule, lr_factor, run_map
from brgm_pyro.metrics import psnr
from brgm_pyro.models import brgm
from brgm_pyro.problem import prepare_problem

PIXEL_ONLY = bp.BRGMParams(sigma_pixel=0.003, sigma_percept=1.0, kappa=0.0)


@pytest.fixture(scope="module")
def G32():
    """A random 32 px generator whose images stay inside [0, 1] (its ToRGB weights scaled down), so
    that y = f(G(w_true)) is exactly reachable; an untrained G overshoots the range and y would be clipped."""
    G = tiny_generator(32, channel_base=512, channel_max=16, w_dim=16, z_dim=16).requires_grad_(False)
    for r in G.synthesis.block_resolutions:
        getattr(G.synthesis, f"b{r}").torgb.weight.mul_(0.25)
    return G


def test_map_reaches_data_consistency_on_synthetic_superresolution(G32):
    """y = f(G(w_true)), factor 4: the MAP explains y to >= 35 dB PSNR."""
    f = fw.Downsample(4, "bicubic")
    x_true = sample_images(G32, 2, seed=5)
    assert 0 < x_true.min() and x_true.max() < 1
    y = f(x_true).clamp(0, 1)
    rec = bp.reconstruct(y, f, G32, params=PIXEL_ONLY, perceptual=None, steps=200, lr=0.1, progress=False)
    assert rec.image.shape == (2, 1, 32, 32)
    assert rec.image.min() >= 0 and rec.image.max() <= 1
    assert rec.y_reconstructed.shape == y.shape
    consistency = rec.data_consistency["psnr"]
    assert (consistency >= 35).all(), consistency
    assert torch.allclose(consistency, psnr(rec.y_reconstructed.clamp(0, 1), y), atol=1e-3)
    # The initialisation at w_avg explains y far worse.
    start = f(bp.stylegan2.to_unit(G32.synthesis(G32.w_avg.expand(2, G32.num_ws, -1)), clamp=True))
    assert (psnr(start.clamp(0, 1), y) < consistency - 10).all()


def test_loss_trace(G32):
    f = fw.Downsample(4, "box")
    y = f(sample_images(G32, 2))
    steps = 20
    rec = bp.reconstruct(y, f, G32, params=bp.BRGMParams(kappa=0.3), perceptual=None, steps=steps, lr=0.05,
                         progress=False)
    assert set(rec.losses) == {"prior", "colinear", "pixel", "total"}
    for trace in rec.losses.values():  # before each step, and where the optimisation ends
        assert trace.shape == (steps + 1, 2) and torch.isfinite(trace).all()
    total = rec.losses["total"]
    assert (total[-1] < total[0]).all()
    summary = rec.summary()
    assert summary["params"]["kappa"] == 0.3 and len(summary["data_consistency"]["psnr"]) == 2


def test_loss_terms_are_the_negative_log_densities_computed_by_hand(G32):
    """The first recorded step is at w = w_avg (where every cosine is 1): each term equals -log p of the
    model's densities written out here, the pixel term over the observed pixels only."""
    observed = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2)) > 0.4
    f = fw.Compose(fw.Downsample(2, "box"), fw.Mask(observed))
    y = f(sample_images(G32, 2, seed=4)).clamp(0, 1)
    params = bp.BRGMParams(sigma_pixel=0.1, kappa=0.3)
    rec = bp.reconstruct(y, f, G32, params=params, perceptual=None, steps=3, search=None, progress=False)
    first = {name: trace[0] for name, trace in rec.losses.items()}

    num_ws, w_dim = G32.num_ws, G32.w_dim
    w_std = float(G32.w_std)
    prior = num_ws * w_dim * (math.log(w_std) + 0.5 * math.log(2 * math.pi))
    colinear = -params.kappa * num_ws * (num_ws - 1) / 2
    with torch.no_grad():
        y_clean = f(bp.stylegan2.to_unit(G32.synthesis(G32.w_avg.expand(2, num_ws, w_dim))))
    squared = ((y - y_clean) / params.sigma_pixel) ** 2 / 2 + math.log(params.sigma_pixel) + 0.5 * math.log(2 * math.pi)
    pixel = (squared * observed.expand_as(y)).flatten(1).sum(1)

    assert torch.allclose(first["prior"], torch.full((2,), prior), rtol=1e-5)
    assert torch.allclose(first["colinear"], torch.full((2,), colinear), rtol=1e-5)
    assert torch.allclose(first["pixel"], pixel, rtol=1e-5)
    assert torch.allclose(first["total"], prior + colinear + pixel, rtol=1e-5)


def _tempered(y):
    """A likelihood tempered by poutine.scale: p(w) p(y | w)^0.1."""
    with pyro.plate("images", y.shape[-3]):
        w = pyro.sample("w", dist.Normal(torch.zeros(2, 3), 1.0).to_event(2))
        with poutine.scale(scale=0.1):
            pyro.sample("y", dist.Normal(w, 0.5).to_event(2), obs=y[0])


SUBSAMPLE = torch.tensor([1, 4])


def _subsampled(y):
    """Six repeated observations per image, two of them seen through a subsampling plate (scale 6 / 2)."""
    with pyro.plate("images", y.shape[-3]):
        w = pyro.sample("w", dist.Normal(torch.zeros(2, 3), 1.0).to_event(2))
        with pyro.plate("repeats", y.shape[0], dim=-2, subsample=SUBSAMPLE) as index:
            pyro.sample("y", dist.Normal(w, 0.5).to_event(2), obs=y[index])


@pytest.mark.parametrize("model, scale, used", [(_tempered, 0.1, [0]), (_subsampled, 3.0, SUBSAMPLE)],
                         ids=["poutine.scale", "subsample"])
def test_map_honours_poutine_scale_and_subsampling_plates(model, scale, used):
    """The MAP of a Gaussian model whose likelihood is scaled is the mode of the scaled density,
    w = scale sum_k y_k / sigma^2 / (1 / tau^2 + scale K / sigma^2) over the K observations used,
    and the recorded terms per image are Pyro's own -log p at the point they were taken."""
    tau, sigma, batch = 1.0, 0.5, 3
    y = torch.randn(6, batch, 2, 3, generator=torch.Generator().manual_seed(0))
    init = torch.zeros(batch, 2, 3)
    latents, losses = run_map(model, (y,), {}, init, MAPSchedule(steps=400, lr=0.05), progress=False)
    w = latents["w"]
    observations = y[used]
    exact = scale * observations.sum(0) / sigma**2 / (1 / tau**2 + scale * observations.shape[0] / sigma**2)
    assert torch.allclose(w, exact, atol=1e-4)
    trace = poutine.trace(poutine.condition(model, data={"w": init})).get_trace(y)
    trace.compute_log_prob()
    per_image = sum(trace.nodes[name]["log_prob"].reshape(-1, batch).sum(0) for name in ("w", "y"))
    assert torch.allclose(losses["total"][0], -per_image, rtol=1e-5)


def test_batch_equals_single_runs(G32):
    f = fw.Compose(fw.Downsample(2, "bilinear"), fw.Mask(torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.3))
    y = f(sample_images(G32, 4, seed=7)).clamp(0, 1)
    params = bp.BRGMParams(sigma_pixel=0.05, kappa=0.2)
    batch = bp.reconstruct(y, f, G32, params=params, perceptual=None, steps=15, lr=0.05, progress=False)
    for i in range(4):
        fi = fw.Compose(fw.Downsample(2, "bilinear"), fw.Mask(f.operators[1].mask[i : i + 1]))
        single = bp.reconstruct(y[i : i + 1], fi, G32, params=params, perceptual=None, steps=15, lr=0.05, progress=False)
        assert torch.allclose(batch.w[i], single.w[0], atol=1e-4)
        assert torch.allclose(batch.image[i], single.image[0], atol=1e-4)
        assert torch.allclose(batch.losses["total"][:, i], single.losses["total"][:, 0], rtol=1e-4, atol=1e-3)


def test_same_seed_same_result(G32):
    f = fw.Downsample(4)
    y = f(sample_images(G32, 1)).clamp(0, 1)
    a = bp.reconstruct(y, f, G32, steps=5, perceptual=None, progress=False, seed=3)
    b = bp.reconstruct(y, f, G32, steps=5, perceptual=None, progress=False, seed=3)
    assert torch.equal(a.w, b.w)


def test_generator_is_left_as_it_was():
    G = tiny_generator(16)
    assert all(p.requires_grad for p in G.parameters())
    f = fw.Downsample(2)
    bp.reconstruct(f(sample_images(G, 1)).clamp(0, 1), f, G, steps=2, perceptual=None, progress=False)
    assert all(p.requires_grad for p in G.parameters())
    assert all(p.grad is None for p in G.parameters())


def test_lr_schedule():
    s = MAPSchedule(steps=100, lr=0.1, rampup=0.05, rampdown=0.25)
    assert lr_factor(0, s) == pytest.approx(1 / 5)
    assert lr_factor(50, s) == pytest.approx(1.0)
    assert lr_factor(99, s) < 0.01
    constant = MAPSchedule(steps=10, rampup=0, rampdown=0)
    assert all(lr_factor(i, constant) == 1.0 for i in range(10))
    with pytest.raises(ValueError, match="steps"):
        MAPSchedule(steps=0)


@pytest.fixture(scope="module")
def G16():
    return tiny_generator(16).requires_grad_(False)


@pytest.mark.parametrize(
    "make_y, f, message",
    [
        (lambda: torch.rand(1, 1, 8, 8), fw.Downsample(4), "shape"),  # wrong size for G
        (lambda: torch.rand(1, 3, 4, 4), fw.Downsample(4), "channel"),  # wrong channel count
        (lambda: torch.rand(1, 1, 4, 4) * 255, fw.Downsample(4), r"no image in \[0, 1\] under this corruption"),
        (lambda: torch.full((1, 1, 4, 4), float("nan")), fw.Downsample(4), "NaN"),
        (lambda: torch.rand(1, 1, 16, 16), fw.Mask(torch.ones(8, 8)), "mask"),
        (lambda: torch.rand(1, 1, 5, 5), fw.Downsample(3), "divide"),
        (lambda: torch.rand(1, 4, 4), fw.Downsample(4), r"\(B, C, H, W\)"),
    ],
)
def test_bad_inputs_get_clear_errors(G16, make_y, f, message):
    with pytest.raises(ValueError, match=message):
        bp.reconstruct(make_y(), f, G16, steps=1, perceptual=None, progress=False)


def test_unknown_kernel():
    with pytest.raises(ValueError, match="kernel"):
        fw.Downsample(2, kernel="lanczos7")


def test_the_search_keeps_the_mode_of_highest_posterior_density(G32):
    """The search refines the prior's average among its K starts, so its MAP is never of lower posterior
    density than the single start's; each image's MAP is its best mode."""
    from brgm_pyro.search import SearchSettings

    f = fw.Downsample(4, "bicubic")
    y = f(sample_images(G32, 3, seed=5)).clamp(0, 1)
    schedule = MAPSchedule(steps=15, lr=0.1)
    one = bp.reconstruct(y, f, G32, perceptual=None, schedule=schedule, search=None, progress=False)
    four = bp.reconstruct(y, f, G32, perceptual=None, schedule=schedule, search=SearchSettings(modes=4, prune_at=None),
                          progress=False)
    assert four.modes.log_joint.shape == (4, 3) and (four.modes.bank_index[0] == -1).all()
    assert torch.allclose(-four.losses["total"][-1], four.modes.log_joint.max(0).values)
    assert (-four.losses["total"][-1] >= -one.losses["total"][-1] - 1e-3).all()
    assert torch.allclose(four.modes.log_joint[0], -one.losses["total"][-1], rtol=1e-4)  # the same start


def test_a_run_in_two_segments_with_adam_s_state_carried_is_one_run(G32):
    f = fw.Downsample(4, "bicubic")
    y = f(sample_images(G32, 2, seed=3)).clamp(0, 1)
    kwargs = prepare_problem(y, f, G32, PIXEL_ONLY, None).model_kwargs()
    start = G32.w_avg.expand(2, G32.num_ws, G32.w_dim)
    schedule = MAPSchedule(steps=12, lr=0.1)
    whole, whole_losses = run_map(brgm.model, (), kwargs, start, schedule, progress=False)
    state = {}
    half, first_losses = run_map(brgm.model, (), kwargs, start, schedule, progress=False, segment=(0, 5), adam_state=state)
    assert set(state) == {"w"} and state["w"]["exp_avg"].shape == start.shape
    rest, rest_losses = run_map(brgm.model, (), kwargs, half, schedule, progress=False, segment=(5, 12), adam_state=state)
    assert torch.allclose(rest["w"], whole["w"], atol=1e-6)
    assert torch.allclose(torch.cat([first_losses["total"][:5], rest_losses["total"]]), whole_losses["total"], rtol=1e-5)
    # Without the state the second segment restarts Adam's moments and takes other steps.
    fresh, _ = run_map(brgm.model, (), kwargs, half, schedule, progress=False, segment=(5, 12))
    assert (fresh["w"] - whole["w"]).abs().max() > 1e-3
    with pytest.raises(InputError, match="A MAP segment is"):
        run_map(brgm.model, (), kwargs, start, schedule, progress=False, segment=(5, 13))


def test_a_pruned_search_goes_on_from_each_image_s_best_mode_alone(G32):
    """After 0.4 of the steps (the default prune_at) each image's best mode goes on alone, on the path it had in the whole run."""
    from brgm_pyro.search import SearchSettings

    f = fw.Downsample(4, "bicubic")
    y = f(sample_images(G32, 3, seed=5)).clamp(0, 1)
    schedule = MAPSchedule(steps=15, lr=0.1)
    run = {"perceptual": None, "schedule": schedule, "progress": False, "sigma_reach": None}
    whole = bp.reconstruct(y, f, G32, search=SearchSettings(modes=4, prune_at=None), **run)
    pruned = bp.reconstruct(y, f, G32, search=SearchSettings(modes=4), **run)  # the default: 0.4 of 15 steps, 6
    at_six = (-whole.modes.losses["total"][6]).argmax(0)
    images = torch.arange(3)
    assert (pruned.modes.refined.sum(0) == 1).all() and (pruned.modes.best == at_six).all()
    assert torch.allclose(pruned.w, whole.modes.latents["w"][at_six, images], atol=1e-5)
    # The modes that stopped keep their density at step 6; the trace is NaN after it.
    stopped = ~pruned.modes.refined
    assert torch.allclose(pruned.modes.log_joint[stopped], -whole.modes.losses["total"][6][stopped], rtol=1e-5)
    assert torch.isnan(pruned.modes.losses["total"][7:][:, stopped]).all()
    assert torch.isfinite(pruned.losses["total"]).all() and pruned.losses["total"].shape == (16, 3)
    assert pruned.summary()["modes"]["refined"] == pruned.modes.refined.T.tolist()
    # The posterior refines every mode to the end whatever the setting; given the pruned MAP, one mode per image.
    post = bp.sample_posterior(y, f, G32, perceptual=None, map_schedule=schedule, num_samples=4, progress=False,
                               search=SearchSettings(modes=4), sigma_reach=None, model="brgm")
    assert post.modes.weights.shape[0] == 4
    one = bp.sample_posterior(y, f, G32, perceptual=None, num_samples=4, progress=False, map_result=pruned,
                              sigma_reach=None, model="brgm")
    assert one.modes.weights.shape[0] == 1


def test_recorded_log_density_gives_the_eager_loop_s_optimisation(G32):
    """The replayed recording of the model's log density (the default) and the model run under Pyro at
    every step take the same steps: the same w and loss terms up to rounding, with phi and a mask."""
    f = fw.Compose(fw.Downsample(2, "bicubic"), fw.Mask(torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.3))
    y = f(sample_images(G32, 2, seed=3)).clamp(0, 1)
    problem = prepare_problem(y, f, G32, bp.BRGMParams(sigma_pixel=0.02, kappa=0.3), "fmnist")
    init = G32.w_avg.expand(2, G32.num_ws, G32.w_dim).clone()
    schedule = MAPSchedule(steps=12, lr=0.05)
    runs = [run_map(brgm.model, (), problem.model_kwargs(), init, schedule, progress=False, traced=traced)
            for traced in (True, False)]
    (latents_traced, losses_traced), (latents_eager, losses_eager) = runs
    w_traced, w_eager = latents_traced["w"], latents_eager["w"]
    assert set(losses_traced) == {"prior", "colinear", "pixel", "percept", "total"} == set(losses_eager)
    assert torch.allclose(w_traced, w_eager, atol=1e-5)
    for name, trace in losses_traced.items():
        assert torch.allclose(trace, losses_eager[name], rtol=1e-5, atol=1e-4), name
    assert not torch.equal(w_traced, init)


def _python_number_of_w(y):
    """A model that turns its latent into a Python number: a recording would freeze that number."""
    with pyro.plate("images", y.shape[0]):
        w = pyro.sample("w", dist.Normal(torch.zeros(2, 3), 1.0).to_event(2))
        pyro.factor("spread", -torch.full((y.shape[0],), float(w.detach().abs().max())) * w.square().sum((-1, -2)))
        pyro.sample("y", dist.Normal(w, 0.5).to_event(2), obs=y)


def test_a_model_the_recording_cannot_follow_runs_eagerly_with_a_warning():
    y = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(0))
    schedule = MAPSchedule(steps=10, lr=0.05)
    with pytest.warns(UserWarning, match="runs the model eagerly"):
        latents, losses = run_map(_python_number_of_w, (y,), {}, torch.zeros(3, 2, 3), schedule, progress=False)
    latents_eager, losses_eager = run_map(_python_number_of_w, (y,), {}, torch.zeros(3, 2, 3), schedule,
                                          progress=False, traced=False)
    assert torch.allclose(latents["w"], latents_eager["w"], atol=1e-6)
    assert torch.allclose(losses["total"], losses_eager["total"], rtol=1e-6)


def test_the_learning_rate_follows_the_documented_formula():
    """The formula in MAPSchedule's docstring, evaluated as written, is what lr_factor computes."""
    import math
    import re

    from brgm_pyro.inference.map import lr_factor

    (formula,) = re.findall(r"lr_factor\(k\) = (.+)", MAPSchedule.__doc__)
    for schedule in (MAPSchedule(steps=100), MAPSchedule(steps=37, rampup=0.2, rampdown=0.5)):
        for k in range(schedule.steps):
            documented = eval(formula, {"min": min, "cos": math.cos, "pi": math.pi, "k": k, "steps": schedule.steps,
                                        "rampup": schedule.rampup, "rampdown": schedule.rampdown})
            assert lr_factor(k, schedule) == pytest.approx(documented, abs=1e-12)
    assert lr_factor(0, MAPSchedule(steps=100)) > 0  # the first step moves


def test_the_final_loss_is_that_of_the_latents_returned(G32):
    """The last row of the loss trace is -log p at the returned MAP, not before the last Adam step: the
    best-of-starts choice compares what it keeps."""
    from brgm_pyro.inference.map import log_joint
    from brgm_pyro.models import brgm
    from brgm_pyro.problem import prepare_problem

    f = fw.Downsample(4, "bicubic")
    problem = prepare_problem(f(sample_images(G32, 2, seed=5)).clamp(0, 1), f, G32, perceptual=None)
    kwargs = problem.model_kwargs()
    init = G32.w_avg.expand(2, G32.num_ws, G32.w_dim).clone()
    latents, losses = run_map(brgm.model, (), kwargs, init, MAPSchedule(steps=4, lr=0.2), progress=False)
    assert torch.allclose(-log_joint(brgm.model, kwargs, latents["w"]), losses["total"][-1], rtol=1e-5)
    assert not torch.allclose(losses["total"][-1], losses["total"][-2], rtol=1e-3)
