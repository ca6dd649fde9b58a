import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_generator

from brgm_pyro.checkpoints import CheckpointError, load_generator, save_generator
from brgm_pyro.stylegan2 import StyleGAN2Generator, fir_filter, modulated_conv2d, upsample2d


@pytest.mark.parametrize("resolution", [4, 8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_num_ws(resolution, channels):
    G = tiny_generator(resolution, channels)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    ws = G.mapping(torch.randn(3, G.z_dim))
    assert ws.shape == (3, G.num_ws, G.w_dim)
    img = G.synthesis(ws)
    assert img.shape == (3, channels, resolution, resolution)
    assert torch.isfinite(img).all()


def test_channel_widths_follow_channel_base_and_max():
    G = StyleGAN2Generator(resolution=32, channels=1, z_dim=8, w_dim=8, channel_base=1024, channel_max=64)
    widths = {r: getattr(G.synthesis, f"b{r}").conv1.weight.shape[0] for r in (4, 8, 16, 32)}
    assert widths == {4: 64, 8: 64, 16: 64, 32: 32}
    assert G.synthesis.b8.conv0.weight.shape == (64, 64, 3, 3)
    assert G.synthesis.b32.torgb.weight.shape == (1, 32, 1, 1)


def test_ws_order():
    """b4.conv1, b4.torgb, then per block conv0, conv1, torgb; torgb shares its w with the next conv0."""
    G = tiny_generator(16)
    seen = {}
    hooks = []
    for name, module in G.synthesis.named_modules():
        if name.endswith("affine"):
            hooks.append(module.register_forward_hook(
                lambda mod, inp, out, name=name: seen.__setitem__(name[: -len(".affine")], int(inp[0][0, 0]))
            ))
    ws = torch.arange(G.num_ws, dtype=torch.float32)[None, :, None].expand(1, G.num_ws, G.w_dim)
    G.synthesis(ws.contiguous())
    for h in hooks:
        h.remove()
    assert seen == {
        "b4.conv1": 0, "b4.torgb": 1,
        "b8.conv0": 1, "b8.conv1": 2, "b8.torgb": 3,
        "b16.conv0": 3, "b16.conv1": 4, "b16.torgb": 5,
    }


def test_modulated_conv_equals_demodulated_per_sample_weights():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, 8)
    weight = torch.randn(4, 5, 3, 3)
    styles = torch.randn(3, 5)
    out = modulated_conv2d(x, weight, styles, demodulate=True)
    # Reference: explicit per-sample weights W_oik s_i, demodulated to unit norm per output channel.
    w = weight[None] * styles[:, None, :, None, None]
    w = w / (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).sqrt()
    assert torch.allclose(w.square().sum(dim=[2, 3, 4]), torch.ones(3, 4), atol=1e-5)
    ref = torch.stack([F.conv2d(x[b : b + 1], w[b], padding=1)[0] for b in range(3)])
    assert torch.allclose(out, ref, atol=1e-5)


def test_upsampling_conv_matches_zero_insertion_reference():
    """conv0: transposed stride-2 conv then [1,3,3,1] FIR (gain 4, pad 1) = zero insertion, conv, blur."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    weight = torch.randn(5, 3, 3, 3)
    styles = torch.ones(2, 3)
    G_layer = tiny_generator(8).synthesis.b8.conv0
    out = modulated_conv2d(x, weight, styles, demodulate=False, up=True)
    assert out.shape == (2, 5, 9, 9)
    # conv_transpose2d(stride 2) == zero insertion + full correlation with the flipped kernel.
    z = torch.zeros(2, 3, 7, 7)
    z[:, :, ::2, ::2] = x
    ref = F.conv2d(F.pad(z, (2, 2, 2, 2)), weight.flip([2, 3]))
    assert torch.allclose(out, ref, atol=1e-5)
    assert G_layer.up and G_layer.resample_filter.sum().item() == pytest.approx(1.0)


def test_upsample2d_keeps_constants_and_doubles_size():
    f = fir_filter()
    x = torch.full((1, 2, 6, 6), 0.7)
    y = upsample2d(x, f)
    assert y.shape == (1, 2, 12, 12)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 0.7), atol=1e-6)


def test_mapping_normalises_z_and_uses_lr_multiplier():
    G = tiny_generator(8)
    z = torch.randn(4, G.z_dim)
    assert torch.allclose(G.mapping(z), G.mapping(3.0 * z), atol=1e-5)
    fc = G.mapping.fc0
    x = torch.randn(2, fc.in_features)
    expected = F.leaky_relu(x @ (fc.weight * 0.01 / math.sqrt(fc.in_features)).t() + 0.01 * fc.bias, 0.2) * math.sqrt(2)
    assert torch.allclose(fc(x), expected, atol=1e-6)


def test_seed_reproducibility():
    a, b, c = tiny_generator(16, seed=3), tiny_generator(16, seed=3), tiny_generator(16, seed=4)
    ws = a.mapping(torch.randn(2, a.z_dim, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(a.synthesis(ws), b.synthesis(ws))
    assert not torch.allclose(a.synthesis(ws), c.synthesis(ws))
    assert torch.equal(a.sample(4, seed=1), b.sample(4, seed=1))
    # Fixed noise buffers by default: the same w gives the same image on every call.
    with torch.no_grad():
        a.synthesis.b8.conv1.noise_strength.fill_(0.5)
    assert torch.equal(a.synthesis(ws), a.synthesis(ws))
    assert not torch.equal(a.synthesis(ws, noise_mode="random"), a.synthesis(ws, noise_mode="random"))


def test_w_stats_from_10000_fixed_seed_samples():
    G = tiny_generator(8)
    z = torch.randn(10_000, G.z_dim, generator=torch.Generator().manual_seed(G.config["w_stats_seed"]))
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
    assert torch.allclose(G.w_avg, w.mean(0), atol=1e-5)
    assert G.w_std.item() == pytest.approx((w - w.mean(0)).square().mean().sqrt().item(), rel=1e-4)
    before = G.w_std.clone()
    G.compute_w_stats()
    assert torch.equal(before, G.w_std)


@pytest.mark.parametrize("bad", [3, 2048, 0, 48])
def test_bad_resolution(bad):
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Generator(resolution=bad)


def test_bad_channels():
    with pytest.raises(ValueError, match="channels"):
        StyleGAN2Generator(resolution=8, channels=2)


def test_checkpoint_round_trip(tmp_path):
    G = tiny_generator(16, channels=3)
    path = save_generator(G, tmp_path / "g.safetensors", info={"note": "test"})
    H = load_generator(path)
    ws = G.mapping(torch.randn(2, G.z_dim))
    assert torch.equal(G.synthesis(ws), H.synthesis(ws))
    assert torch.equal(G.w_avg, H.w_avg) and torch.equal(G.w_std, H.w_std)
    assert H.info == {"note": "test"}
    assert not any(p.requires_grad for p in H.parameters())


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No generator file"):
        load_generator(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_generator(corrupt)
    G = tiny_generator(8)
    path = save_generator(G, tmp_path / "g.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        load_generator(truncated)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a brgm-pyro generator"):
        load_generator(foreign)
    with pytest.raises(ValueError, match=".safetensors"):
        save_generator(G, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="folder"):
        load_generator(tmp_path)


def test_a_frozen_generator_follows_swapped_noise_maps():
    """What a frozen G keeps between calls (noise plus bias) is recomputed for a new noise map, also when
    the new map reuses the storage of a freed one, and for per-image maps (B, 1, R, R)."""
    from brgm_pyro import stylegan2

    G = tiny_generator(16).requires_grad_(False)
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)))
    layer = G.synthesis.b16.conv1
    for seed in range(3):
        layer.noise_const = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
        out = G.synthesis(ws, noise_mode="const")
        stylegan2._REUSED.clear()
        torch.testing.assert_close(out, G.synthesis(ws, noise_mode="const"))
