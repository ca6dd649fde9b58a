"""Tests of brgm_pyro.importers: foreign checkpoints load to the same generator, and nothing runs.

Each foreign file is written here from a tiny random generator in the layout of its format. The
layout facts used by the writers, and where they come from:

* NVIDIA PyTorch pickle (stylegan2-ada-pytorch, ``torch_utils/persistence.py`` and
  ``training/networks.py``): ``pickle.dump`` of ``dict(training_set_kwargs, G, D, G_ema,
  augment_pipe)``; each network reduces to ``_reconstruct_persistent_obj(meta)`` with
  ``meta = dict(type="class", version, module_src, class_name, state)`` and ``state`` the module's
  ``__dict__`` (``_parameters``/``_buffers``/``_modules`` OrderedDicts, attributes, ``_init_kwargs``).
  Parameter names and shapes are those of our generator, plus persistent ``resample_filter`` buffers.
* rosinality ``.pt`` (stylegan2-pytorch ``model.py``/``convert_weight.py``): ``style`` is
  ``Sequential(PixelNorm, EqualLinear * n_mlp)`` so mapping layers are ``style.1..n_mlp``;
  ``ModulatedConv2d.weight`` is (1, O, I, k, k) scaled at run time by 1/sqrt(I k k); modulation is an
  ``EqualLinear`` with bias_init 1; ``NoiseInjection.weight`` is (1,); ``FusedLeakyReLU.bias``;
  ``ToRGB.bias`` is (1, C, 1, 1); ``Blur``/``Upsample`` keep ``kernel`` = [1,3,3,1] filter * 4;
  noise buffers ``noises.noise_{i}`` are (1, 1, R, R); the file is ``{"g_ema": ..., "latent_avg": ...}``.
* NVIDIA TensorFlow pickle (stylegan2 ``dnnlib/tflib/network.py``, ``training/networks_stylegan2.py``):
  ``(G, D, Gs)`` of ``Network`` objects pickled through ``__getstate__`` (name, static_kwargs,
  components, build_module_src, build_func_name, variables); dense weights are [in, out], conv
  weights HWIO scaled at run time by 1/sqrt(I k k), ``Conv0_up`` runs ``conv2d_transpose`` with the
  kernel flipped, the modulation adds 1 to ``mod_bias`` at run time, noises are ``noise{i}``
  (1, 1, R, R).

Because the writers invert the importers' rules, the round trips alone would only prove
self-consistency; the tests marked "hand-computed" check single layers against values worked out
by hand from each format's published maths.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import math
import os
import pickle
import sys
import time
import types
import urllib.error
import urllib.request
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brgm_pyro import importers
from brgm_pyro.checkpoints import CheckpointError, load_generator, save_generator
from brgm_pyro.importers import (
    PUBLIC_PRIORS,
    load_foreign,
    load_public_prior,
    public_prior_path,
    sniff_format,
)
from brgm_pyro.stylegan2 import StyleGAN2Generator, fir_conv, fir_filter, modulated_conv2d, upsample2d

TINY = {
    "resolution": 16,
    "z_dim": 16,
    "w_dim": 16,
    "mapping_layers": 2,
    "channel_base": 256,
    "channel_max": 32,
}
NVIDIA_CLASS = {
    "StyleGAN2Generator": "training.networks.Generator",
    "MappingNetwork": "training.networks.MappingNetwork",
    "FullyConnectedLayer": "training.networks.FullyConnectedLayer",
    "SynthesisNetwork": "training.networks.SynthesisNetwork",
    "SynthesisBlock": "training.networks.SynthesisBlock",
    "SynthesisLayer": "training.networks.SynthesisLayer",
    "ToRGBLayer": "training.networks.ToRGBLayer",
}


def random_generator(channels: int = 3, conv_clamp: float | None = None) -> StyleGAN2Generator:
    """A tiny generator whose every parameter and buffer is random (none left at its init value)."""
    G = StyleGAN2Generator(channels=channels, conv_clamp=conv_clamp, seed=0, compute_stats=False, **TINY)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in G.state_dict().items():
            if name not in ("w_avg", "w_std"):
                tensor.add_(0.3 * torch.randn(tensor.shape, generator=gen))
    G.compute_w_stats()
    return G.eval()


def assert_same_generator(G: StyleGAN2Generator, H: StyleGAN2Generator) -> None:
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(3, G.z_dim, generator=gen)
    ws = G.w_avg + G.w_std * torch.randn(3, G.num_ws, G.w_dim, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(H.mapping(z), G.mapping(z), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            H.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"), atol=1e-5, rtol=1e-5
        )
    assert H.config == G.config
    torch.testing.assert_close(H.w_avg, G.w_avg, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(H.w_std, G.w_std, atol=1e-5, rtol=1e-5)


@contextlib.contextmanager
def stub_modules(*names: str):
    """Register empty modules under ``names`` only while a foreign file is being written."""
    saved = {name: sys.modules.get(name) for name in names}
    modules = {name: types.ModuleType(name) for name in names}
    sys.modules.update(modules)
    try:
        yield modules
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def _stub(module: types.ModuleType, name: str, obj):
    obj.__module__, obj.__qualname__, obj.__name__ = module.__name__, name, name
    setattr(module, name, obj)
    return obj


def _never_called(*args):
    raise AssertionError("the stand-in of a foreign global must never be called")


# ----------------------------------------------------------------------------- NVIDIA PyTorch pickles


def _module_src(sentinel: Path) -> str:
    # If any loader executed the embedded source, the sentinel file would appear.
    return f"open({str(sentinel)!r}, 'w').close()\nraise SystemExit('never run this')\n"


def _nvidia_objects(G: StyleGAN2Generator, sentinel: Path, reconstruct, easydict, c_dim: int = 0):
    class Persistent:
        def __init__(self, class_name: str, state: dict) -> None:
            self.class_name, self.state = class_name, state

        def __reduce__(self):
            meta = {
                "type": "class",
                "version": 4,
                "module_src": _module_src(sentinel),
                "class_name": self.class_name,
                "state": self.state,
            }
            return reconstruct, (meta,)

    def convert(module: torch.nn.Module, top: bool = False) -> Persistent:
        kind = type(module).__name__
        buffers = OrderedDict(
            (n, b.clone()) for n, b in module._buffers.items() if not (top and n in ("w_avg", "w_std"))
        )
        state = {
            "training": False,
            "_parameters": OrderedDict(
                (n, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
                for n, p in module._parameters.items()
            ),
            "_buffers": buffers,  # resample_filter is a persistent buffer in NVIDIA's layers
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": OrderedDict(),
            "_forward_hooks": OrderedDict(),
            "_forward_pre_hooks": OrderedDict(),
            "_state_dict_hooks": OrderedDict(),
            "_load_state_dict_pre_hooks": OrderedDict(),
            "_modules": OrderedDict((n, convert(m)) for n, m in module._modules.items()),
        }
        if kind == "FullyConnectedLayer":
            state.update(activation=module.activation, bias_gain=module.bias_gain)
            state["weight_gain"] = np.float64(module.weight_gain)  # np.sqrt makes it a numpy scalar
        if kind in ("SynthesisLayer", "ToRGBLayer"):
            state["conv_clamp"] = module.conv_clamp
        if kind == "SynthesisBlock":
            state.update(architecture="skip", resolution=module.resolution, in_channels=module.in_channels)
        if top:
            cfg = G.config
            state.update(
                z_dim=G.z_dim,
                c_dim=c_dim,
                w_dim=G.w_dim,
                img_resolution=G.resolution,
                img_channels=G.channels,
            )
            state["_init_args"] = ()
            state["_init_kwargs"] = easydict(
                z_dim=G.z_dim,
                c_dim=c_dim,
                w_dim=G.w_dim,
                img_resolution=G.resolution,
                img_channels=G.channels,
                mapping_kwargs=easydict(num_layers=cfg["mapping_layers"]),
                synthesis_kwargs=easydict(
                    channel_base=cfg["channel_base"],
                    channel_max=cfg["channel_max"],
                    num_fp16_res=0,
                    conv_clamp=cfg["conv_clamp"],
                ),
            )
        return Persistent(NVIDIA_CLASS.get(kind, f"training.networks.{kind}"), state)

    D = Persistent(
        "training.networks.Discriminator", {"_parameters": OrderedDict(w=torch.randn(4, 4)), "_modules": {}}
    )
    return convert(G, top=True), D


def write_nvidia_pickle(
    G: StyleGAN2Generator, path: Path, sentinel: Path, c_dim: int = 0, extra: dict | None = None
) -> Path:
    with stub_modules("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util") as mods:
        reconstruct = _stub(mods["torch_utils.persistence"], "_reconstruct_persistent_obj", _never_called)
        easydict = _stub(mods["dnnlib.util"], "EasyDict", type("EasyDict", (dict,), {}))
        G_ema, D = _nvidia_objects(G, sentinel, reconstruct, easydict, c_dim)
        data = {
            "training_set_kwargs": easydict(
                class_name="training.dataset.ImageFolderDataset", path="data.zip"
            ),
            "G": G_ema,
            "D": D,
            "G_ema": G_ema,
            "augment_pipe": None,
            **(extra or {}),
        }
        path.write_bytes(pickle.dumps(data, protocol=3))  # Python 3.7's default, as NVIDIA's files
    return path


@pytest.mark.parametrize("channels, conv_clamp", [(3, None), (1, None), (3, 256)])
def test_nvidia_pickle_round_trip(tmp_path, channels, conv_clamp):
    G = random_generator(channels, conv_clamp)
    sentinel = tmp_path / "module_src_ran"
    path = write_nvidia_pickle(G, tmp_path / "network-snapshot.pkl", sentinel)
    assert sniff_format(path) == "nvidia-pkl"
    H = load_foreign(path)
    assert not sentinel.exists()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert H.source_format == "nvidia-pkl"
    assert H.config["conv_clamp"] == conv_clamp
    assert torch.equal(H.mapping.w_avg, G.mapping.w_avg)  # the file's running average is kept
    assert_same_generator(G, H)


def test_load_generator_reads_foreign_files_by_path(tmp_path):
    G = random_generator()
    path = write_nvidia_pickle(G, tmp_path / "snapshot.whatever", tmp_path / "ran")
    H = load_generator(path)
    assert not H.training and not any(p.requires_grad for p in H.parameters())
    assert_same_generator(G, H)


def test_project_safetensors_is_sniffed_and_loaded(tmp_path):
    G = random_generator()
    path = save_generator(G, tmp_path / "g.safetensors")
    assert sniff_format(path) == "brgm-safetensors"
    assert load_foreign(path).source_format == "brgm-safetensors"


def test_conditional_nvidia_generator_is_refused(tmp_path):
    path = write_nvidia_pickle(random_generator(), tmp_path / "cond.pkl", tmp_path / "ran", c_dim=10)
    with pytest.raises(CheckpointError, match="conditional"):
        load_foreign(path)


# ----------------------------------------------------------------------------- code must never run


class _RunsShellCommand:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


class _RunsPython:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return exec, (f"open({str(self.sentinel)!r}, 'w').close()",)


def test_plain_pickle_that_runs_code_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _RunsShellCommand(sentinel)}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_foreign(path)
    assert not sentinel.exists()


def test_nvidia_pickle_with_os_system_is_refused_by_name(tmp_path):
    sentinel = tmp_path / "pwned"
    path = write_nvidia_pickle(
        random_generator(), tmp_path / "evil.pkl", tmp_path / "ran", extra={"x": _RunsShellCommand(sentinel)}
    )
    with pytest.raises(CheckpointError, match=r"'(posix|nt|os)\.system'.*nothing was executed"):
        load_foreign(path)
    assert not sentinel.exists()


def test_tf_pickle_with_unknown_global_is_refused_by_name(tmp_path):
    sentinel = tmp_path / "pwned"
    path = write_tf_pickle(
        random_generator(), tmp_path / "evil.pkl", extra_kwargs={"x": _RunsPython(sentinel)}
    )
    with pytest.raises(CheckpointError, match=r"'builtins\.exec'"):
        load_foreign(path)
    assert not sentinel.exists()


# ----------------------------------------------------------------------------- rosinality .pt


def to_rosinality(G: StyleGAN2Generator) -> dict[str, torch.Tensor]:
    """Our state dict in rosinality's names, shapes and scales (see the module docstring)."""
    sd = {k: v.clone() for k, v in G.state_dict().items()}
    out = {}
    for i in range(G.config["mapping_layers"]):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    resolutions = G.synthesis.block_resolutions
    blur = fir_filter() * 4
    layers = [("conv1", "b4.conv1")] + [
        (f"convs.{2 * m + c}", f"b{r}.conv{c}") for m, r in enumerate(resolutions[1:]) for c in (0, 1)
    ]
    for theirs, ours in layers:
        w = sd[f"synthesis.{ours}.weight"]
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        out[f"{theirs}.conv.weight"] = (w * math.sqrt(fan_in))[None]
        out[f"{theirs}.conv.modulation.weight"] = sd[f"synthesis.{ours}.affine.weight"]
        out[f"{theirs}.conv.modulation.bias"] = sd[f"synthesis.{ours}.affine.bias"]
        out[f"{theirs}.noise.weight"] = sd[f"synthesis.{ours}.noise_strength"].reshape(1)
        out[f"{theirs}.activate.bias"] = sd[f"synthesis.{ours}.bias"]
        if ours.endswith("conv0"):
            out[f"{theirs}.conv.blur.kernel"] = blur
    for theirs, block in [("to_rgb1", "b4")] + [
        (f"to_rgbs.{m}", f"b{r}") for m, r in enumerate(resolutions[1:])
    ]:
        out[f"{theirs}.conv.weight"] = sd[f"synthesis.{block}.torgb.weight"][None]
        out[f"{theirs}.conv.modulation.weight"] = sd[f"synthesis.{block}.torgb.affine.weight"]
        out[f"{theirs}.conv.modulation.bias"] = sd[f"synthesis.{block}.torgb.affine.bias"]
        out[f"{theirs}.bias"] = sd[f"synthesis.{block}.torgb.bias"].reshape(1, -1, 1, 1)
        if block != "b4":
            out[f"{theirs}.upsample.kernel"] = blur
    noise_layers = ["b4.conv1"] + [f"b{r}.conv{c}" for r in resolutions[1:] for c in (0, 1)]
    for j, layer in enumerate(noise_layers):
        out[f"noises.noise_{j}"] = sd[f"synthesis.{layer}.noise_const"][None, None]
    return out


@pytest.mark.parametrize("channels", [3, 1])
def test_rosinality_round_trip(tmp_path, channels):
    G = random_generator(channels)
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": to_rosinality(G), "latent_avg": G.mapping.w_avg.clone()}, path)
    assert sniff_format(path) == "rosinality-pt"
    H = load_foreign(path)
    assert H.source_format == "rosinality-pt"
    assert torch.equal(H.mapping.w_avg, G.mapping.w_avg)
    assert_same_generator(G, H)


def test_rosinality_training_checkpoint_without_latent_avg(tmp_path):
    G = random_generator()
    path = tmp_path / "train.pt"
    ckpt = {"g_ema": to_rosinality(G), "g": to_rosinality(G), "args": argparse.Namespace(size=16, n_mlp=2)}
    torch.save(ckpt, path)
    H = load_foreign(path)
    assert_same_generator(G, H)
    torch.testing.assert_close(H.mapping.w_avg, H.w_avg)  # no running average in the file: the sample mean


def test_rosinality_single_layers_hand_computed(tmp_path):
    theirs = to_rosinality(random_generator())
    # EqualLinear(16, 16, lr_mul=0.01) stores W / lr_mul and computes
    # y = x (W_stored * lr_mul / sqrt(16))^T + b * lr_mul.
    theirs["style.1.weight"] = torch.full((16, 16), 100.0)
    theirs["style.1.bias"] = torch.full((16,), 5.0)
    # ToRGB: ModulatedConv2d(32, 3, 1, demodulate=False) with scale 1 / sqrt(32 * 1 * 1), style = 1, bias 0.5.
    theirs["to_rgb1.conv.weight"] = torch.full((1, 3, 32, 1, 1), 2.0)
    theirs["to_rgb1.conv.modulation.weight"] = torch.zeros(32, 16)
    theirs["to_rgb1.conv.modulation.bias"] = torch.ones(32)
    theirs["to_rgb1.bias"] = torch.full((1, 3, 1, 1), 0.5)
    theirs["conv1.conv.weight"] = torch.full((1, 32, 32, 3, 3), 3.0)
    theirs["noises.noise_1"] = torch.full((1, 1, 8, 8), 7.0)
    path = tmp_path / "hand.pt"
    torch.save({"g_ema": theirs}, path)
    H = load_foreign(path)
    with torch.no_grad():
        # 16 inputs of 1: 16 * 100 * 0.01 / 4 + 5 * 0.01 = 4.05, then leaky ReLU times sqrt(2).
        torch.testing.assert_close(H.mapping.fc0(torch.ones(1, 16)), torch.full((1, 16), 4.05 * math.sqrt(2)))
        # 32 inputs of 1: 32 * 2 / sqrt(32) + 0.5 = 2 sqrt(32) + 0.5.
        rgb = H.synthesis.b4.torgb(torch.ones(1, 32, 4, 4), torch.randn(1, 16))
        torch.testing.assert_close(rgb, torch.full((1, 3, 4, 4), 2 * math.sqrt(32) + 0.5))
    # The demodulated conv keeps their run-time scale 1 / sqrt(I k k) = 1 / sqrt(288) in the weight.
    torch.testing.assert_close(H.synthesis.b4.conv1.weight, torch.full((32, 32, 3, 3), 3.0 / math.sqrt(288)))
    # noise_1 is the second noise input: the upsampling conv of the 8x8 block.
    assert torch.equal(H.synthesis.b8.conv0.noise_const, torch.full((8, 8), 7.0))


# ----------------------------------------------------------------------------- TensorFlow pickles


def tf_variables(G: StyleGAN2Generator) -> tuple[list, list]:
    """(mapping, synthesis) variables of G in TensorFlow StyleGAN2's names, layouts and scales."""
    sd = {k: v.detach().clone().numpy() for k, v in G.state_dict().items()}
    mapping = []
    for i in range(G.config["mapping_layers"]):
        mapping += [
            (f"Dense{i}/weight", sd[f"mapping.fc{i}.weight"].T),
            (f"Dense{i}/bias", sd[f"mapping.fc{i}.bias"]),
        ]
    synthesis = [("4x4/Const/const", sd["synthesis.b4.const"][None])]
    for r in G.synthesis.block_resolutions:
        layers = [("Conv", "conv1")] if r == 4 else [("Conv0_up", "conv0"), ("Conv1", "conv1")]
        for tf_name, ours in layers:
            w = sd[f"synthesis.b{r}.{ours}.weight"]
            hwio = (w * math.sqrt(w.shape[1] * w.shape[2] * w.shape[3])).transpose(2, 3, 1, 0)
            if tf_name == "Conv0_up":
                hwio = hwio[::-1, ::-1]
            p = f"synthesis.b{r}.{ours}."
            synthesis += [
                (f"{r}x{r}/{tf_name}/weight", np.ascontiguousarray(hwio)),
                (f"{r}x{r}/{tf_name}/mod_weight", sd[p + "affine.weight"].T),
                (f"{r}x{r}/{tf_name}/mod_bias", sd[p + "affine.bias"] - 1),
                (f"{r}x{r}/{tf_name}/noise_strength", np.float32(sd[p + "noise_strength"])),
                (f"{r}x{r}/{tf_name}/bias", sd[p + "bias"]),
            ]
        p = f"synthesis.b{r}.torgb."
        synthesis += [
            (f"{r}x{r}/ToRGB/weight", sd[p + "weight"].transpose(2, 3, 1, 0)),
            (f"{r}x{r}/ToRGB/mod_weight", sd[p + "affine.weight"].T),
            (f"{r}x{r}/ToRGB/mod_bias", sd[p + "affine.bias"] - 1),
            (f"{r}x{r}/ToRGB/bias", sd[p + "bias"]),
        ]
    noise_layers = ["b4.conv1"] + [f"b{r}.conv{c}" for r in G.synthesis.block_resolutions[1:] for c in (0, 1)]
    synthesis += [
        (f"noise{j}", sd[f"synthesis.{layer}.noise_const"][None, None])
        for j, layer in enumerate(noise_layers)
    ]
    return mapping, synthesis


def write_tf_pickle(
    G: StyleGAN2Generator,
    path: Path,
    variables: tuple[list, list] | None = None,
    extra_kwargs: dict | None = None,
    w_avg: np.ndarray | None = None,
) -> Path:
    mapping, synthesis = variables or tf_variables(G)
    with stub_modules("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network") as mods:

        class Network:
            def __init__(self, state: dict) -> None:
                self._state = state

            def __getstate__(self) -> dict:
                return self._state

        _stub(mods["dnnlib.tflib.network"], "Network", Network)

        def network(name: str, variables: list, components: dict | None = None, **kwargs) -> Network:
            return Network(
                {
                    "version": 4,
                    "name": name,
                    "static_kwargs": kwargs,
                    "components": components or {},
                    "build_module_src": "raise SystemExit('never run this')\n",
                    "build_func_name": name,
                    "variables": variables,
                }
            )

        components = {
            "mapping": network(
                "G_mapping", mapping, dlatent_size=G.w_dim, mapping_layers=G.config["mapping_layers"]
            ),
            "synthesis": network("G_synthesis", synthesis, conv_clamp=G.config["conv_clamp"]),
        }
        w_avg = G.mapping.w_avg.numpy() if w_avg is None else w_avg
        own = [("lod", np.float32(0.0)), ("dlatent_avg", w_avg)]
        kwargs = {
            "num_channels": G.channels,
            "resolution": G.resolution,
            "label_size": 0,
            **(extra_kwargs or {}),
        }
        Gs = network("Gs", own, components, **kwargs)
        D = network("D", [("Output/weight", np.ones((4, 1), np.float32))])
        path.write_bytes(pickle.dumps((Gs, D, Gs), protocol=3))  # Python 3.6's default, as NVIDIA's files
    return path


@pytest.mark.parametrize("channels, conv_clamp", [(3, None), (1, None), (3, 256)])
def test_tf_pickle_round_trip(tmp_path, channels, conv_clamp):
    G = random_generator(channels, conv_clamp)
    path = write_tf_pickle(G, tmp_path / "stylegan2-tiny-config-f.pkl")
    assert sniff_format(path) == "tf-pkl"
    H = load_foreign(path)
    assert "dnnlib" not in sys.modules
    assert H.source_format == "tf-pkl"
    assert torch.equal(H.mapping.w_avg, G.mapping.w_avg)
    assert_same_generator(G, H)


def test_tf_single_layers_hand_computed(tmp_path):
    G = random_generator()
    mapping, synthesis = tf_variables(G)
    mapping, synthesis = dict(mapping), dict(synthesis)
    # Dense0 [in, out]: only output 0 reads the inputs (weight 100), output 1 has bias 5; lrmul 0.01.
    dense = np.zeros((16, 16), np.float32)
    dense[:, 0] = 100.0
    bias = np.zeros(16, np.float32)
    bias[1] = 5.0
    mapping["Dense0/weight"], mapping["Dense0/bias"] = dense, bias
    # ToRGB: runtime weight 2 / sqrt(32), style = mod_bias + 1 = 1, bias 0.5.
    synthesis["4x4/ToRGB/weight"] = np.full((1, 1, 32, 3), 2.0, np.float32)
    synthesis["4x4/ToRGB/mod_weight"] = np.zeros((16, 32), np.float32)
    synthesis["4x4/ToRGB/mod_bias"] = np.zeros(32, np.float32)
    synthesis["4x4/ToRGB/bias"] = np.full(3, 0.5, np.float32)
    kernel = (
        np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    )  # HWIO, not symmetric
    synthesis["8x8/Conv0_up/weight"] = kernel
    path = write_tf_pickle(G, tmp_path / "hand.pkl", (list(mapping.items()), list(synthesis.items())))
    H = load_foreign(path)
    with torch.no_grad():
        # output 0: 16 * 100 * 0.01 / sqrt(16) = 4; output 1: 5 * 0.01; then leaky ReLU times sqrt(2).
        expected = torch.zeros(1, 16)
        expected[0, 0], expected[0, 1] = 4.0 * math.sqrt(2), 0.05 * math.sqrt(2)
        torch.testing.assert_close(H.mapping.fc0(torch.ones(1, 16)), expected)
        rgb = H.synthesis.b4.torgb(torch.ones(1, 32, 4, 4), torch.randn(1, 16))
        torch.testing.assert_close(rgb, torch.full((1, 3, 4, 4), 2 * math.sqrt(32) + 0.5))
        # TF's upsample_conv_2d is documented as upsample_2d followed by conv2d with the (runtime) kernel,
        # padding once at the start: away from the border it equals conv2d(upsample(x), w / sqrt(I k k)).
        x = torch.randn(1, 32, 6, 6, generator=torch.Generator().manual_seed(4))
        reference = F.conv2d(
            upsample2d(x, fir_filter()), torch.from_numpy(kernel).permute(3, 2, 0, 1), padding=1
        )
        reference = reference / math.sqrt(32 * 9)
        ours = modulated_conv2d(x, H.synthesis.b8.conv0.weight, torch.ones(1, 32), demodulate=False, up=True)
        ours = fir_conv(ours, fir_filter(), (1, 1, 1, 1), gain=4.0)
        torch.testing.assert_close(ours[..., 2:-2, 2:-2], reference[..., 2:-2, 2:-2], atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- broken and foreign files


@pytest.mark.parametrize("fmt", ["nvidia", "tf", "rosinality"])
def test_truncated_files_give_a_clear_error(tmp_path, fmt):
    G = random_generator()
    path = tmp_path / f"full.{fmt}"
    if fmt == "nvidia":
        write_nvidia_pickle(G, path, tmp_path / "ran")
    elif fmt == "tf":
        write_tf_pickle(G, path)
    else:
        torch.save({"g_ema": to_rosinality(G), "latent_avg": G.mapping.w_avg}, path)
    data = path.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_foreign(cut)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content, match",
    [
        (
            bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
            "not a generator checkpoint",
        ),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG image"),
        (b'{"resolution": 1024, "weights": [1, 2, 3]}', "JSON"),
        (b"", "empty"),
        (pickle.dumps({"G_ema": [1, 2, 3]}), "neither NVIDIA"),
    ],
)
def test_foreign_files_give_a_clear_error(tmp_path, content, match):
    path = tmp_path / "ffhq.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_foreign(path)


# ----------------------------------------------------------------------------- the registry of public priors


def test_registry_entries_are_complete():
    filenames = [entry["filename"] for entry in PUBLIC_PRIORS.values()]
    assert len(set(filenames)) == len(filenames)
    for name, entry in PUBLIC_PRIORS.items():
        assert entry["url"].startswith("https://"), name
        assert entry["source_format"] in importers.FORMATS, name
        assert entry["resolution"] in (256, 512, 1024), name
        assert entry["perceptual"] == "lpips-vgg", name
        assert "commercial" in entry["licence"], name
        assert {"sha256", "md5", "channels", "data"} <= set(entry), name


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """Torch hub cache in tmp_path, and any attempt to reach the network fails as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    return calls


def test_offline_download_names_url_and_path(offline_hub, tmp_path):
    expected = tmp_path / "torch" / "hub" / "checkpoints" / PUBLIC_PRIORS["ffhq-1024"]["filename"]
    assert public_prior_path("ffhq-1024") == expected
    with pytest.raises(CheckpointError) as info:
        load_public_prior("ffhq-1024")
    message = str(info.value)
    assert PUBLIC_PRIORS["ffhq-1024"]["url"] in message and str(expected) in message
    assert "\n" not in message and not expected.exists()


def test_unknown_public_prior_lists_the_names():
    with pytest.raises(ValueError, match="ffhq-1024"):
        load_public_prior("no-such-prior")


def _tiny_entry(data: bytes, **overrides) -> dict:
    entry = dict(PUBLIC_PRIORS["ffhq-256"], url="https://example.invalid/tiny.pkl", filename="tiny-test.pkl")
    entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data), resolution=16)
    entry.update(overrides)
    return entry


def test_cached_prior_is_used_without_network(offline_hub, tmp_path, monkeypatch):
    G = random_generator()
    pickled = write_nvidia_pickle(G, tmp_path / "src.pkl", tmp_path / "ran").read_bytes()
    monkeypatch.setitem(PUBLIC_PRIORS, "tiny-test", _tiny_entry(pickled))
    cached = public_prior_path("tiny-test")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(pickled)
    H = load_public_prior("tiny-test")
    assert offline_hub == []
    assert H.name == "tiny-test" and H.card["licence"] == PUBLIC_PRIORS["tiny-test"]["licence"]
    assert H.card["perceptual"] == "lpips-vgg"
    assert_same_generator(G, H)


def test_cached_prior_with_wrong_checksum_is_refused(offline_hub, tmp_path, monkeypatch):
    pickled = write_nvidia_pickle(random_generator(), tmp_path / "src.pkl", tmp_path / "ran").read_bytes()
    monkeypatch.setitem(PUBLIC_PRIORS, "tiny-test", _tiny_entry(pickled, sha256="0" * 64))
    cached = public_prior_path("tiny-test")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(pickled)
    with pytest.raises(CheckpointError, match="fails its sha256 check.*delete it") as info:
        load_public_prior("tiny-test")
    assert str(cached) in str(info.value)


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


@pytest.mark.parametrize("good_checksum", [True, False])
def test_download_is_atomic_and_checked(tmp_path, monkeypatch, good_checksum):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    G = random_generator()
    pickled = write_nvidia_pickle(G, tmp_path / "src.pkl", tmp_path / "ran").read_bytes()
    entry = _tiny_entry(pickled) if good_checksum else _tiny_entry(pickled, sha256="f" * 64)
    monkeypatch.setitem(PUBLIC_PRIORS, "tiny-test", entry)
    requested = []

    def serve(request, timeout=None):
        requested.append(request.full_url)
        return _FakeResponse(pickled)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    dest = public_prior_path("tiny-test")
    if good_checksum:
        assert_same_generator(G, load_public_prior("tiny-test"))
        assert dest.read_bytes() == pickled
    else:
        with pytest.raises(CheckpointError, match="fails its sha256 check"):
            load_public_prior("tiny-test")
        assert not dest.exists()
    assert requested == [entry["url"]]
    assert sorted(p.name for p in dest.parent.iterdir()) == ([dest.name] if good_checksum else [])


# ----------------------------------------------------------------------------- 1024 px


@pytest.mark.slow
def test_ffhq_config_f_synthesises_1024_px():
    G = StyleGAN2Generator(
        resolution=1024,
        channels=3,
        z_dim=512,
        w_dim=512,
        mapping_layers=8,
        channel_base=32768,
        channel_max=512,
        seed=0,
        compute_stats=False,
    )
    assert G.num_ws == 18
    ws = torch.randn(1, G.num_ws, 512, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.no_grad():
        img = G.synthesis(ws)
    elapsed = time.perf_counter() - start
    assert img.shape == (1, 3, 1024, 1024) and torch.isfinite(img).all()
    print(f"config-f 1024 px synthesis: {elapsed:.1f} s")


def test_loaded_generator_saves_as_project_file(tmp_path):
    # The config read from a pickle must be plain JSON (numpy scalars in pickles would break it).
    H = load_foreign(
        write_nvidia_pickle(random_generator(conv_clamp=256), tmp_path / "g.pkl", tmp_path / "ran")
    )
    path = save_generator(H, tmp_path / "g.safetensors")
    assert_same_generator(H, load_generator(path))
