import pyro
import pytest
import torch
import torch.nn.functional as F
from conftest import sample_images, tiny_generator
from pyro import poutine

from brgm_pyro import forward as fw
from brgm_pyro.models import brgm
from brgm_pyro.perceptual import FeatureNetwork
from brgm_pyro.stylegan2 import to_unit


class TinyFeatures(FeatureNetwork):
    """A fixed random conv feature map, enough to exercise the perceptual likelihood."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(0))
        self.freeze()

    def forward(self, images):
        return torch.tanh(self.conv(images)).flatten(1)


def log_joint(model_kwargs, w):
    conditioned = poutine.condition(brgm.model, data={"w": w})
    trace = poutine.trace(conditioned).get_trace(**model_kwargs)
    return trace.log_prob_sum()


def eq8(w, G, f, y, observed, phi, params):
    """The paper's Eq. 8 written out by hand (without its constants)."""
    l_w = ((w - G.w_avg) / G.w_std).square().sum()
    unit = F.normalize(w, dim=-1)
    cos = unit @ unit.transpose(-1, -2)
    i, j = torch.triu_indices(G.num_ws, G.num_ws, offset=1)
    l_colin = -2 * params.kappa * cos[:, i, j].sum()
    y_clean = f(to_unit(G.synthesis(w)))
    l_pixel = ((y - y_clean) * observed).square().sum() / params.sigma_pixel**2
    l_percept = (phi(y) - phi(y_clean)).square().sum() / params.sigma_percept**2
    return l_w + l_colin + l_pixel + l_percept


def test_log_density_differences_match_closed_form_eq8():
    G = tiny_generator(16).requires_grad_(False)
    mask = fw.Mask.center_box(16, 6)
    f = fw.Compose(fw.Blur.gaussian(0.8), mask)
    y = f(sample_images(G, 2)).clamp(0, 1)
    phi = TinyFeatures()
    params = brgm.BRGMParams(sigma_pixel=0.1, sigma_percept=0.5, kappa=0.7)
    observed = f.observed(y.shape)
    kwargs = dict(y=y, forward=f, generator=G, params=params, observed=observed, perceptual=phi,
                  y_features=phi(y))
    torch.manual_seed(0)
    w1 = G.w_avg + G.w_std * torch.randn(2, G.num_ws, G.w_dim)
    w2 = G.w_avg + G.w_std * torch.randn(2, G.num_ws, G.w_dim)
    model_diff = log_joint(kwargs, w1) - log_joint(kwargs, w2)
    closed_form = -0.5 * (eq8(w1, G, f, y, observed, phi, params) - eq8(w2, G, f, y, observed, phi, params))
    assert model_diff.item() == pytest.approx(closed_form.item(), rel=1e-4, abs=1e-3)


def test_what_y_holds_in_a_hole_never_changes_the_result():
    """Black hole against white hole, same observed pixels: the same prepared problem (phi(y) included),
    the same MAP, with the perceptual likelihood on, through the library alone (no CLI zeroing)."""
    import brgm_pyro as bp
    from brgm_pyro.problem import prepare_problem

    G = tiny_generator(16).requires_grad_(False)
    f = fw.Mask.center_box(16, 8)
    y = f(sample_images(G, 2)).clamp(0, 1)
    hole = 1 - f.observed(y.shape)
    white = y + hole  # the hole holds 1 instead of 0
    for perceptual in (TinyFeatures(), "fmnist"):
        black_problem = prepare_problem(y, f, G, perceptual=perceptual)
        white_problem = prepare_problem(white, f, G, perceptual=perceptual)
        assert torch.equal(black_problem.y, white_problem.y)
        assert torch.equal(black_problem.y_features, white_problem.y_features)
    for params in ("brgm-reference", "paper"):
        black = bp.reconstruct(y, f, G, params=params, perceptual="fmnist", steps=5, progress=False)
        other = bp.reconstruct(white, f, G, params=params, perceptual="fmnist", steps=5, progress=False)
        assert torch.equal(black.w, other.w)


def test_the_perceptual_term_sees_only_observed_outputs():
    """phi compares m * f(x) with m * y: an f whose unobserved outputs depend on x (a mask before a
    downsampling) gives the same density whatever x does there."""
    G = tiny_generator(16).requires_grad_(False)
    f = fw.Compose(fw.Mask.center_box(16, 6), fw.Downsample(2, "bicubic"))
    phi = TinyFeatures()
    params = brgm.BRGMParams(sigma_pixel=0.1, sigma_percept=0.5, kappa=0.0)
    y = f(sample_images(G, 1))
    observed = f.observed((1, 1, 16, 16))
    kwargs = dict(y=y * observed, forward=f, generator=G, params=params, observed=observed, perceptual=phi,
                  y_features=phi(y * observed))
    w = G.w_avg + G.w_std * torch.randn(1, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(3))
    trace = poutine.trace(poutine.condition(brgm.model, data={"w": w})).get_trace(**kwargs)
    seen = f(trace.nodes["image"]["value"]) * observed
    assert torch.allclose(trace.nodes["y_features"]["fn"].mean, phi(seen))


def test_model_sites_and_plate():
    G = tiny_generator(8).requires_grad_(False)
    f = fw.Downsample(2, "box")
    y = f(sample_images(G, 3))
    trace = poutine.trace(brgm.model).get_trace(y, f, G, brgm.BRGMParams())
    assert trace.nodes["w"]["value"].shape == (3, G.num_ws, G.w_dim)
    assert trace.nodes["image"]["value"].shape == (3, 1, 8, 8)
    assert trace.nodes["y"]["is_observed"]
    assert "y_features" not in trace.nodes
    trace.compute_log_prob()
    assert trace.nodes["w"]["log_prob"].shape == (3,)
    assert trace.nodes["y"]["log_prob"].shape == (3,)
    assert trace.nodes["colinear"]["log_prob"].shape == (3,)
    # The generator is frozen and is no Pyro parameter.
    assert not pyro.get_param_store().keys() or all("synthesis" not in k for k in pyro.get_param_store().keys())


def test_colinearity_prefers_aligned_latents():
    w_aligned = torch.ones(1, 4, 8)
    w_orthogonal = torch.eye(8)[:4][None]
    assert brgm.colinearity(w_aligned).item() == pytest.approx(6.0)
    assert brgm.colinearity(w_orthogonal).item() == pytest.approx(0.0, abs=1e-6)


def test_paper_preset_is_the_papers_lambdas():
    p = brgm.preset("paper")
    assert 2 * p.kappa == pytest.approx(0.03)
    assert (p.sigma_pixel * 255) ** -2 == pytest.approx(1e-5)
    assert p.sigma_percept**-2 == pytest.approx(0.01)


def test_reference_preset_reproduces_the_authors_loss_up_to_a_constant_factor():
    """Authors' loss (brgm-pytorch): lambda_pix mean((255 dy)^2) + lambda_perc mean(dphi^2)
    + lambda_w mean(((w - w_avg)/(sqrt(D) w_std))^2) + lambda_c sum_{i,j}(1 - cos). Its differences
    between two w must be c = 2 lambda_w / (L D^2) times the differences of our -log p."""
    G = tiny_generator(16).requires_grad_(False)
    f = fw.Downsample(4, "bicubic")
    y = f(sample_images(G, 1)).clamp(0, 1)
    phi = TinyFeatures()
    L, D = G.num_ws, G.w_dim
    params = brgm.preset("brgm-reference", L, D, y[0].numel(), phi(y).shape[-1])
    kwargs = dict(y=y, forward=f, generator=G, params=params, observed=None, perceptual=phi, y_features=phi(y))

    def authors_loss(w):
        synth = f(to_unit(G.synthesis(w)))
        unit = F.normalize(w[0], dim=-1)
        return (
            1e-3 * (255 * (synth - y)).square().mean()
            + 1e7 * (phi(y) - phi(synth)).square().mean()
            + 100 * ((w - G.w_avg) / (D**0.5 * G.w_std)).square().mean()
            + 0.1 * (1 - unit @ unit.t()).abs().sum()
        )

    torch.manual_seed(1)
    w1 = G.w_avg + G.w_std * torch.randn(1, L, D)
    w2 = G.w_avg + G.w_std * torch.randn(1, L, D)
    c = 2 * 100 / (L * D**2)
    ours = -(log_joint(kwargs, w1) - log_joint(kwargs, w2))
    theirs = authors_loss(w1) - authors_loss(w2)
    assert theirs.item() == pytest.approx(c * ours.item(), rel=1e-3)


@pytest.mark.parametrize("field,value", [("sigma_pixel", 0.0), ("sigma_pixel", -1.0), ("sigma_percept", float("nan")),
                                         ("kappa", -0.1)])
def test_bad_params(field, value):
    with pytest.raises(ValueError, match=field):
        brgm.BRGMParams(**{field: value})


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown preset"):
        brgm.preset("fancy")
