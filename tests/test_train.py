import json

import pytest
import torch

from brgm_pyro.checkpoints import load_generator
from brgm_pyro.training.discriminator import Discriminator
from brgm_pyro.training.recipe import TrainConfig, Trainer, train_prior

TINY = TrainConfig(
    resolution=8, z_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=8,
    d_channel_base=64, d_channel_max=8, batch_size=4, r1_interval=2, seed=3,
)


@pytest.fixture(scope="module")
def images():
    return torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_discriminator_shapes():
    D = Discriminator(resolution=16, channels=3, channel_base=128, channel_max=16)
    assert D(torch.randn(8, 3, 16, 16)).shape == (8,)
    assert D(torch.randn(6, 3, 16, 16)).shape == (6,)  # minibatch-std groups that do not divide 4


def test_training_resumes_to_the_same_state(tmp_path, images):
    straight = train_prior(images, tmp_path / "a", kimg=0.032, config=TINY, checkpoint_kimg=0.016, progress=False)
    train_prior(images, tmp_path / "b", kimg=0.016, config=TINY, checkpoint_kimg=0.016, progress=False)
    resumed = train_prior(images, tmp_path / "b", kimg=0.032, config=TINY, checkpoint_kimg=0.016, progress=False)
    assert resumed.cur_nimg == straight.cur_nimg == 32
    for name in ("G", "D", "G_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resuming"
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in log] == [0.016, 0.032]
    G = load_generator(tmp_path / "b" / "generator.safetensors")
    assert G.info["kimg"] == 0.032
    assert G.sample(2).shape == (2, 1, 8, 8)


def test_training_changes_g_and_ema_lags(images):
    trainer = Trainer(images, TINY)
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    stats = [trainer.step() for _ in range(4)]
    assert "r1" in stats[0] and "r1" not in stats[1] and "r1" in stats[2]
    assert all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in stats)
    changed = [k for k, v in trainer.G.state_dict().items() if not torch.equal(v, before[k])]
    assert any("synthesis" in k for k in changed) and any("mapping" in k for k in changed)
    weight = "synthesis.b8.conv1.weight"
    assert not torch.equal(trainer.G_ema.state_dict()[weight], trainer.G.state_dict()[weight])


def test_bad_training_inputs(tmp_path, images):
    with pytest.raises(ValueError, match="config asks for"):
        Trainer(torch.rand(4, 3, 8, 8), TINY)
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        train_prior(images, target, kimg=0.004, config=TINY, progress=False)
    train_prior(images, tmp_path / "run", kimg=0.004, config=TINY, progress=False)
    other = TrainConfig(**{**TINY.__dict__, "channel_max": 16})
    with pytest.raises(ValueError, match="another generator architecture"):
        train_prior(images, tmp_path / "run", kimg=0.008, config=other, progress=False)


def test_path_lengths_are_the_norm_of_the_jacobian_transpose_times_y(images):
    """|J_w^T y| against the explicit Jacobian of one image with respect to its num_ws copies of w."""
    trainer = Trainer(images, TrainConfig(**{**TINY.__dict__, "style_mixing": 0.0}))
    G = trainer.G
    torch.manual_seed(5)
    lengths = trainer.path_lengths(1)
    # The same draws again: z, then the synthesis noise, then y.
    torch.manual_seed(5)
    ws = G.mapping(torch.randn(1, G.z_dim)).detach()
    noise_state = torch.get_rng_state()
    image = G.synthesis(ws, noise_mode="random")
    y = torch.randn_like(image) / 8.0

    def render(w):
        torch.set_rng_state(noise_state)
        return G.synthesis(w, noise_mode="random")

    J = torch.autograd.functional.jacobian(render, ws).reshape(image.numel(), G.num_ws, G.w_dim)
    jt_y = torch.einsum("p,pkd->kd", y.flatten(), J)
    expected = jt_y.square().sum(dim=1).mean().sqrt()
    torch.testing.assert_close(lengths, expected.reshape(1), rtol=1e-4, atol=1e-7)


def test_path_length_regularisation_is_lazy_and_resumes(tmp_path, images):
    trainer = Trainer(images, TINY)
    assert TINY.pl_weight > 0 and TINY.pl_interval == 4
    stats = [trainer.step() for _ in range(5)]
    assert ["pl" in s for s in stats] == [True, False, False, False, True]
    assert 0 < float(trainer.pl_mean) and torch.isfinite(stats[4]["pl"])
    c = 4 / 5  # G's Adam is adjusted for the lazy regulariser
    assert trainer.opt_G.param_groups[0]["lr"] == pytest.approx(TINY.lr * c)
    assert trainer.opt_G.param_groups[0]["betas"] == pytest.approx((0.0, 0.99**c))
    off = Trainer(images, TrainConfig(**{**TINY.__dict__, "pl_weight": 0.0}))
    assert "pl" not in off.step() and off.opt_G.param_groups[0]["lr"] == TINY.lr
    # A run without the term, resumed with it: the config decides Adam's lr, pl_mean starts at 0.
    train_prior(images, tmp_path / "run", kimg=0.008, config=off.config, checkpoint_kimg=0.004, progress=False)
    with pytest.warns(UserWarning, match=r"other settings than it was trained with so far \(--pl-weight 0.0 -> 2.0\)"):
        resumed = train_prior(images, tmp_path / "run", kimg=0.020, config=TINY, progress=False)  # steps 2-4
    assert resumed.opt_G.param_groups[0]["lr"] == pytest.approx(TINY.lr * c)
    state = torch.load(tmp_path / "run" / "training-state.pt", weights_only=True)
    assert float(state["pl_mean"]) > 0
