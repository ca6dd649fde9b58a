"""Tests of the foreign checkpoint readers (brgm_pyro.checkpoints): the files their publishers' code writes load to the same generator, anything else is refused by name, and nothing in a file runs.

The files are written by ``foreign_files`` (this folder) in the exact structure of the real writers
(``scripts/check_real_checkpoints.py`` compares that structure, and the loaded networks, with files
written by the real code). Because the writers invert the readers' renaming, the round trips
alone would only prove self-consistency; the tests marked "hand-computed" check single layers
against values worked out by hand from each format's published maths.
"""

from __future__ import annotations

import math
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from foreign_files import (
    NVIDIA_GLOBALS,
    Network,
    assert_same_generator,
    dump,
    nvidia_generator,
    nvidia_source,
    pickle_globals,
    random_generator,
    stylegan3_generator,
    tensorflow_source,
    tf_variables,
    to_rosinality,
    write_nvidia_pickle,
    write_rosinality,
    write_tf_pickle,
)

from brgm_pyro.checkpoints import CheckpointError, load_foreign, load_generator, save_generator, sniff_format
from brgm_pyro.stylegan2 import StyleGAN2Generator, fir_conv, fir_filter, modulated_conv2d, upsample2d

__all__ = ["random_generator", "write_nvidia_pickle"]  # test_cli_tools imports them from here


def assert_nothing_ran(sentinel: Path) -> None:
    assert not sentinel.exists()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


# ----------------------------------------------------------------------------- both pickle formats


PICKLES = {
    "stylegan2-ada-pytorch": (lambda G, path, sentinel: write_nvidia_pickle(G, path, sentinel), "nvidia-pkl"),
    "stylegan3": (
        lambda G, path, sentinel: write_nvidia_pickle(G, path, sentinel, layout="stylegan3"),
        "nvidia-pkl",
    ),
    "tf-stylegan2": (lambda G, path, sentinel: write_tf_pickle(G, path, sentinel), "tf-pkl"),
    "tf-stylegan2-ada": (
        lambda G, path, sentinel: write_tf_pickle(G, path, sentinel, release="stylegan2-ada"),
        "tf-pkl",
    ),
}
RECOGNISED = {
    "stylegan2-ada-pytorch": "NVIDIA stylegan2-ada-pytorch pickle",
    "stylegan3": "NVIDIA stylegan3 pickle (networks_stylegan2.py)",
    "tf-stylegan2": "NVIDIA TensorFlow stylegan2 pickle",
    "tf-stylegan2-ada": "NVIDIA TensorFlow stylegan2-ada pickle",
}
CASES = [(writer, channels, None) for writer in PICKLES for channels in (1, 3)]
CASES += [(writer, 3, 256) for writer in PICKLES if writer != "tf-stylegan2"]  # TF StyleGAN2 has no clamp


@pytest.mark.parametrize("writer, channels, conv_clamp", CASES)
def test_pickle_round_trip(tmp_path, writer, channels, conv_clamp):
    G = random_generator(channels, conv_clamp)
    sentinel = tmp_path / "module_src_ran"
    write, fmt = PICKLES[writer]
    path = write(G, tmp_path / "network-snapshot-000100.pkl", sentinel)
    assert sniff_format(path) == fmt
    H = load_foreign(path)
    assert_nothing_ran(sentinel)
    assert H.source_format == fmt
    assert H.config["conv_clamp"] == conv_clamp
    assert torch.equal(H.mapping.w_avg, G.mapping.w_avg)  # the file's running average is kept
    assert_same_generator(G, H)  # G_ema / Gs, not the training copy G stored next to it
    shape = "channel_base 256, channel_max 32, 2 mapping layers, w_dim 16"
    clamp = ", conv_clamp 256" if conv_clamp else ""
    plural = "s" if channels > 1 else ""
    expected = f"{RECOGNISED[writer]}, StyleGAN2 generator, 16 px, {channels} channel{plural}, {shape}{clamp}"
    assert H.info["recognised"] == expected


# ----------------------------------------------------------------------------- NVIDIA PyTorch pickles


def test_nvidia_records_the_bare_class_name_and_still_loads(tmp_path):
    # persistence.py records class_name=self._orig_class_name, the bare "Generator" of StyleGAN2 and StyleGAN3 alike.
    G = random_generator()
    path = write_nvidia_pickle(G, tmp_path / "snapshot.pkl", tmp_path / "ran")
    with open(path, "rb") as handle:
        assert (
            b"\x8c\tGenerator" in handle.read()
        )  # SHORT_BINUNICODE "Generator", not "training.networks.Generator"
    assert pickle_globals(path) == NVIDIA_GLOBALS
    assert_same_generator(G, load_generator(path))


# These are the markers of the recorded module source that identification reads (as text).
STYLEGAN2_SOURCE_MARKERS = (
    "class MappingNetwork(",
    "class SynthesisBlock(",
    "class ToRGBLayer(",
    "def modulated_conv2d(",
)
STYLEGAN3_SOURCE_MARKERS = ("class SynthesisInput(", "filtered_lrelu")


def _with_source(G: StyleGAN2Generator, tmp_path: Path, markers: tuple[str, ...]) -> Path:
    record = nvidia_generator(G, nvidia_source(tmp_path / "ran", markers))
    return write_nvidia_pickle(G, tmp_path / "g.pkl", tmp_path / "ran", G_ema=record)


def test_these_source_markers_are_enough_to_identify_stylegan2(tmp_path):
    G = random_generator()
    assert_same_generator(G, load_foreign(_with_source(G, tmp_path, STYLEGAN2_SOURCE_MARKERS)))
    assert_nothing_ran(tmp_path / "ran")


@pytest.mark.parametrize("marker", STYLEGAN2_SOURCE_MARKERS)
def test_identification_needs_every_stylegan2_marker_of_the_source(tmp_path, marker):
    G = random_generator()
    without = tuple(m for m in STYLEGAN2_SOURCE_MARKERS if m != marker)
    with pytest.raises(
        CheckpointError, match=r"recorded as 'Generator' \(its source defines .*is not a StyleGAN2"
    ):
        load_foreign(_with_source(G, tmp_path, without))
    assert_nothing_ran(tmp_path / "ran")


@pytest.mark.parametrize("marker", STYLEGAN3_SOURCE_MARKERS)
def test_a_stylegan3_marker_in_the_source_is_refused_as_stylegan3(tmp_path, marker):
    path = _with_source(random_generator(), tmp_path, STYLEGAN2_SOURCE_MARKERS + (marker,))
    with pytest.raises(CheckpointError, match="StyleGAN3-T"):
        load_foreign(path)


@pytest.mark.parametrize("radial, variant", [(False, "StyleGAN3-T"), (True, "StyleGAN3-R")])
def test_stylegan3_generator_is_refused_with_one_sentence(tmp_path, radial, variant):
    sentinel = tmp_path / "ran"
    path = write_nvidia_pickle(
        random_generator(),
        tmp_path / "sg3.pkl",
        sentinel,
        layout="stylegan3",
        G_ema=stylegan3_generator(sentinel, radial),
    )
    with pytest.raises(CheckpointError) as info:
        load_foreign(path)
    message = str(info.value)
    assert (
        f"holds a {variant} (alias-free) generator from NVIDIA's stylegan3 training/networks_stylegan3.py"
        in message
    )
    assert "only StyleGAN2 generators (stylegan2-ada-pytorch's training/networks.py" in message
    assert "\n" not in message and message.count(". ") == 0
    assert_nothing_ran(sentinel)


def test_stylegan3_state_under_a_stylegan2_source_is_refused_as_stylegan3(tmp_path):
    record = stylegan3_generator(tmp_path / "ran")
    record.module_src = nvidia_source(tmp_path / "ran")  # StyleGAN2's markers, StyleGAN3's parts
    path = write_nvidia_pickle(random_generator(), tmp_path / "g.pkl", tmp_path / "ran", G_ema=record)
    with pytest.raises(CheckpointError, match="StyleGAN3-T"):
        load_foreign(path)


def test_other_networks_are_refused_naming_what_they_are(tmp_path):
    source = "class SuperresGenerator(torch.nn.Module):\nclass Generator(torch.nn.Module):\n"
    record = nvidia_generator(random_generator(), source)
    path = write_nvidia_pickle(random_generator(), tmp_path / "g.pkl", tmp_path / "ran", G_ema=record)
    with pytest.raises(
        CheckpointError, match="its source defines SuperresGenerator, Generator; its parts are"
    ):
        load_foreign(path)
    record = nvidia_generator(random_generator(), nvidia_source(tmp_path / "ran"))
    record.class_name = "Discriminator"
    path = write_nvidia_pickle(random_generator(), tmp_path / "d.pkl", tmp_path / "ran", G_ema=record)
    with pytest.raises(CheckpointError, match="recorded as 'Discriminator'"):
        load_foreign(path)


@pytest.mark.parametrize("layout", ["stylegan2-ada-pytorch", "stylegan3"])
@pytest.mark.parametrize("architecture, meaning", [("orig", "no skip connections"), ("resnet", "residual")])
def test_orig_and_resnet_architectures_are_refused_in_both_layouts(tmp_path, layout, architecture, meaning):
    G = random_generator(conv_clamp=256)  # stylegan3's resnet skip layers are unclamped: the clamps differ
    path = write_nvidia_pickle(
        G, tmp_path / "g.pkl", tmp_path / "ran", layout=layout, architecture=architecture
    )
    with pytest.raises(CheckpointError) as info:
        load_foreign(path)
    assert f"the '{architecture}' synthesis architecture ({meaning}" in str(info.value)
    assert "only the 'skip' architecture" in str(info.value)


def test_conditional_nvidia_generator_is_refused(tmp_path):
    path = write_nvidia_pickle(random_generator(), tmp_path / "cond.pkl", tmp_path / "ran", c_dim=10)
    with pytest.raises(CheckpointError, match="conditional"):
        load_foreign(path)


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


class _StorageHoldingAPickle:
    """A tensor storage record (torch.storage._load_from_bytes) whose bytes are a pickle that runs code."""

    def __init__(self, sentinel: Path) -> None:
        self.data = pickle.dumps(_RunsShellCommand(sentinel), protocol=2)  # torch.load's own protocol

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.data,)


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


def test_code_nested_in_a_generator_record_is_refused_by_name(tmp_path):
    sentinel = tmp_path / "pwned"
    record = nvidia_generator(random_generator(), nvidia_source(tmp_path / "ran"))
    record.state["_modules"]["mapping"].state["_init_kwargs"]["num_layers"] = _RunsPython(sentinel)
    path = write_nvidia_pickle(random_generator(), tmp_path / "evil.pkl", tmp_path / "ran", G_ema=record)
    with pytest.raises(CheckpointError, match=r"'builtins\.exec'.*nothing was executed"):
        load_foreign(path)
    assert not sentinel.exists()


def test_a_tensor_storage_that_holds_a_pickle_with_code_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    path = write_nvidia_pickle(
        random_generator(),
        tmp_path / "evil.pkl",
        tmp_path / "ran",
        extra={"x": _StorageHoldingAPickle(sentinel)},
    )
    with pytest.raises(
        CheckpointError, match="a tensor storage inside it is itself a pickle.*nothing was executed"
    ):
        load_foreign(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("stylegan3", [False, True])
def test_module_source_is_read_as_text_never_run(tmp_path, stylegan3):
    # The placeholder sources of the fixtures end in code that would create the sentinel; identification
    # reads them (a StyleGAN2 one loads, a StyleGAN3 one is refused) and runs nothing.
    sentinel = tmp_path / "ran"
    G_ema = stylegan3_generator(sentinel) if stylegan3 else None
    path = write_nvidia_pickle(random_generator(), tmp_path / "g.pkl", sentinel, G_ema=G_ema)
    if stylegan3:
        with pytest.raises(CheckpointError, match="StyleGAN3"):
            load_foreign(path)
    else:
        load_foreign(path)
    assert str(sentinel) in nvidia_source(sentinel)
    assert_nothing_ran(sentinel)


def test_tf_pickle_with_unknown_global_is_refused_by_name(tmp_path):
    sentinel = tmp_path / "pwned"
    path = write_tf_pickle(
        random_generator(), tmp_path / "evil.pkl", tmp_path / "ran", extra_kwargs={"x": _RunsPython(sentinel)}
    )
    with pytest.raises(CheckpointError, match=r"'builtins\.exec'"):
        load_foreign(path)
    assert not sentinel.exists()


# ----------------------------------------------------------------------------- rosinality .pt


@pytest.mark.parametrize("writer", ["convert_weight", "train"])
@pytest.mark.parametrize("legacy", [False, True])
def test_rosinality_round_trip(tmp_path, writer, legacy):
    G = random_generator(3)
    path = write_rosinality(G, tmp_path / "550000.pt", writer, legacy)
    assert sniff_format(path) == "rosinality-pt"
    H = load_foreign(path)
    assert H.source_format == "rosinality-pt"
    assert H.info["recognised"].startswith(
        f"rosinality stylegan2-pytorch {'train.py checkpoint' if writer == 'train' else 'convert_weight.py output'}, "
        "StyleGAN2 generator, 16 px, 3 channels"
    )
    if writer == "convert_weight":
        assert torch.equal(H.mapping.w_avg, G.mapping.w_avg)
        assert_same_generator(G, H)
    else:  # train.py saves no running average of w: it is the sample mean
        torch.testing.assert_close(H.mapping.w_avg, H.w_avg)
        ws = G.w_avg + G.w_std * torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(H.synthesis(ws), G.synthesis(ws), atol=1e-5, rtol=1e-5)


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


def test_tf_pickle_has_the_globals_of_numpy_1_files(tmp_path):
    path = write_tf_pickle(random_generator(), tmp_path / "g.pkl", tmp_path / "ran")
    assert pickle_globals(path) == [
        "dnnlib.tflib.network.Network",
        "numpy.core.multiarray._reconstruct",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.multiarray.scalar",
    ]


@pytest.mark.parametrize(
    "functions, match",
    [
        (("G_main", "G_mapping", "G_synthesis_stylegan_revised"), "config a-d generator"),
        (("G_style", "G_mapping", "G_synthesis"), "StyleGAN \\(first version\\) generator"),
    ],
)
def test_tf_networks_other_than_stylegan2_are_refused(tmp_path, functions, match):
    source = tensorflow_source(tmp_path / "ran", functions)
    if "G_style" in functions:  # StyleGAN's networks_stylegan.py has no modulated convolution
        source = source.replace("def modulated_conv2d_layer(", "def blur2d(")
    path = write_tf_pickle(
        random_generator(), tmp_path / "g.pkl", tmp_path / "ran", functions=functions, source=source
    )
    with pytest.raises(CheckpointError, match=match):
        load_foreign(path)
    assert_nothing_ran(tmp_path / "ran")


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
    variables = (list(mapping.items()), list(synthesis.items()))
    H = load_foreign(write_tf_pickle(G, tmp_path / "hand.pkl", tmp_path / "ran", variables=variables))
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
        write_tf_pickle(G, path, tmp_path / "ran")
    else:
        write_rosinality(G, path)
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


def test_an_nvidia_pickle_without_g_ema_is_refused(tmp_path):
    path = dump(
        {"D": nvidia_generator(random_generator(), nvidia_source(tmp_path / "ran"))}, tmp_path / "d.pkl"
    )
    with pytest.raises(CheckpointError, match="without a 'G_ema' generator"):
        load_foreign(path)


def test_a_tf_pickle_that_is_not_the_three_networks_is_refused(tmp_path):
    path = dump((Network({"name": "Gs"}),), tmp_path / "one.pkl")
    with pytest.raises(CheckpointError, match=r"not the \(G, D, Gs\) tuple"):
        load_foreign(path)


# ----------------------------------------------------------------------------- 1024 px


@pytest.mark.slow
def test_ffhq_config_f_synthesises_1024_px():
    config_f = dict(z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768, channel_max=512)
    G = StyleGAN2Generator(resolution=1024, channels=3, **config_f, seed=0, compute_stats=False)
    assert G.num_ws == 18
    ws = torch.randn(1, G.num_ws, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = G.synthesis(ws)
    assert img.shape == (1, 3, 1024, 1024) and torch.isfinite(img).all()


def test_loaded_generator_saves_as_project_file(tmp_path):
    # The config read from a pickle must be plain JSON (numpy scalars in pickles would break it).
    H = load_foreign(
        write_nvidia_pickle(random_generator(conv_clamp=256), tmp_path / "g.pkl", tmp_path / "ran")
    )
    path = save_generator(H, tmp_path / "g.safetensors")
    assert_same_generator(H, load_generator(path))
