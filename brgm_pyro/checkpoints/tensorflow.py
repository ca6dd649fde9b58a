"""NVIDIA's TensorFlow StyleGAN2 pickles (stylegan2, stylegan2-ada TF, the BRGM authors' priors): recognised from their record, renamed to our weights.

Format (``dnnlib/tflib/network.py``, ``training/misc.py`` of NVlabs/stylegan2): ``pickle.dump((G, D,
Gs), protocol=pickle.HIGHEST_PROTOCOL)`` of three ``dnnlib.tflib.network.Network`` objects, each
pickled through ``Network.__getstate__`` as the dict ``{version: 4, name, static_kwargs, components,
build_module_src, build_func_name, variables}``; ``variables`` is a list of (name relative to the
network's scope, numpy value) and ``components`` holds the ``mapping`` and ``synthesis`` Networks.
``Gs`` (the moving average) is converted. The network is recognised from the synthesis
component's ``build_func_name`` (``G_synthesis_stylegan2`` in stylegan2, ``G_synthesis`` in
stylegan2-ada) and its ``build_module_src``, which must contain :data:`TF_STYLEGAN2_MARKER`.

==========================================  ===================================  =================
TensorFlow (scope/variable)                 ours                                 transform
==========================================  ===================================  =================
G_mapping/Dense{i}/weight [in, out]         mapping.fc{i}.weight [out, in]       transpose
G_mapping/Dense{i}/bias                     mapping.fc{i}.bias                   --
Gs/dlatent_avg                              mapping.w_avg                        --
G_synthesis/4x4/Const/const [1, C, 4, 4]    synthesis.b4.const [C, 4, 4]         drop batch axis
G_synthesis/4x4/Conv/*                      synthesis.b4.conv1.*                 (layer rules)
G_synthesis/{R}x{R}/Conv0_up/*              synthesis.b{R}.conv0.*               (layer rules), flip
G_synthesis/{R}x{R}/Conv1/*                 synthesis.b{R}.conv1.*               (layer rules)
G_synthesis/{R}x{R}/ToRGB/*                 synthesis.b{R}.torgb.*               (layer rules)
G_synthesis/noise{j} [1, 1, R, R]           noise_const [R, R] of layer j        see build.noise_layers
==========================================  ===================================  =================

layer rules: ``weight`` [k, k, I, O] (HWIO) -> [O, I, k, k]; ``mod_weight`` [w_dim, I] ->
``affine.weight`` [I, w_dim]; ``mod_bias`` + 1 -> ``affine.bias`` (TF adds the 1 at run time, we
store it); ``bias`` -> ``bias``; ``noise_strength`` -> ``noise_strength``. ``Conv0_up`` kernels are
flipped in both spatial axes: TF's ``upsample_conv_2d`` runs ``conv2d_transpose`` with the kernel
reversed, ours runs ``conv_transpose2d`` with it as is. Convolution weights are stored without
the equalised-learning-rate constant ``1 / sqrt(I k k)`` that TF applies at run time, *before*
modulation: for demodulated layers it cancels up to the ``1e-8`` inside the square root, so it is
folded into the weight to reproduce their arithmetic exactly; for ToRGB (no demodulation) it is
exactly our ``weight_gain`` on the style, so those weights are copied as they are. Dense layers
(``dense_layer``/``apply_bias_act`` with ``lrmul``) equal our fully connected layer as stored.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from brgm_pyro.checkpoints.build import SUPPORTED, Foreign, noise_layers, plain
from brgm_pyro.checkpoints.unpickler import TFNetwork, unpickle
from brgm_pyro.errors import CheckpointError

__all__ = ["TF_STYLEGAN2_MARKER", "read_tensorflow"]

#: Text of StyleGAN2's TensorFlow network module (stylegan2 and stylegan2-ada alike): its modulated convolution.
TF_STYLEGAN2_MARKER = "def modulated_conv2d_layer("
_SYNTHESIS_FUNCTIONS = {"G_synthesis_stylegan2": "stylegan2", "G_synthesis": "stylegan2-ada"}


def _identify(synthesis: TFNetwork, path: Path) -> str:
    """Which TensorFlow release built the synthesis network, or a CheckpointError saying what it is."""
    function = str(synthesis.state.get("build_func_name"))
    source = synthesis.state.get("build_module_src")
    source = source if isinstance(source, str) else ""
    if function in _SYNTHESIS_FUNCTIONS and TF_STYLEGAN2_MARKER in source:
        return _SYNTHESIS_FUNCTIONS[function]
    if function == "G_synthesis_stylegan_revised":
        what = "a StyleGAN2 config a-d generator (the revised StyleGAN with progressive growing)"
    elif "def G_style(" in source:
        what = "a StyleGAN (first version) generator"
    else:
        what = f"a network built by '{function}', not StyleGAN2's synthesis network"
    raise CheckpointError(f"{path} is a TensorFlow pickle that holds {what}; only {SUPPORTED} are supported.")


def _variables(net: TFNetwork, path: Path, what: str) -> dict[str, np.ndarray]:
    variables = net.state.get("variables")
    if not isinstance(variables, (list, tuple)):
        raise CheckpointError(f"{path} has a {what} network without variables; the file is corrupt.")
    return {str(name): np.asarray(value) for name, value in variables}


def read_tensorflow(path: Path) -> Foreign:
    """The StyleGAN2 generator ``Gs`` of an NVIDIA TensorFlow pickle, in our names (nothing in it runs)."""
    data = unpickle(path, "tf-pkl")
    if not (isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetwork) for n in data)):
        raise CheckpointError(
            f"{path} is a TensorFlow pickle but not the (G, D, Gs) tuple of StyleGAN2; not supported."
        )
    Gs = data[2]
    components = Gs.state.get("components") or {}
    if not isinstance(components.get("mapping"), TFNetwork) or not isinstance(
        components.get("synthesis"), TFNetwork
    ):
        raise CheckpointError(
            f"{path} has no mapping and synthesis networks in Gs; it is not a StyleGAN2 generator."
        )
    release = _identify(components["synthesis"], path)
    own = _variables(Gs, path, "Gs")
    mapping = _variables(components["mapping"], path, "mapping")
    synthesis = _variables(components["synthesis"], path, "synthesis")
    kwargs = {
        **dict(Gs.state.get("static_kwargs") or {}),
        **dict(components["mapping"].state.get("static_kwargs") or {}),
        **dict(components["synthesis"].state.get("static_kwargs") or {}),
    }
    if kwargs.get("label_size") or any(k.startswith(("LabelConcat", "LabelEmbed")) for k in mapping):
        raise CheckpointError(
            f"{path} is a conditional (class-label) generator; only unconditional generators can be priors."
        )
    if kwargs.get("architecture", "skip") != "skip":
        raise CheckpointError(
            f"{path} uses the '{kwargs['architecture']}' synthesis architecture; only 'skip' (StyleGAN2's "
            "default, configs e and f) is supported."
        )

    def take(table: dict[str, np.ndarray], name: str, scope: str) -> torch.Tensor:
        if name not in table:
            raise CheckpointError(
                f"{path} has no variable {scope}/{name}, so it is not a StyleGAN2 (config e/f) generator; "
                "not supported."
            )
        return torch.from_numpy(np.array(table[name], dtype=np.float32))

    state: dict[str, torch.Tensor] = {}
    for i in range(len([k for k in mapping if re.fullmatch(r"Dense\d+/weight", k)])):
        state[f"mapping.fc{i}.weight"] = take(mapping, f"Dense{i}/weight", "G_mapping").t()
        state[f"mapping.fc{i}.bias"] = take(mapping, f"Dense{i}/bias", "G_mapping")
    if "dlatent_avg" in own:
        state["mapping.w_avg"] = take(own, "dlatent_avg", "Gs")
    resolutions = sorted({int(m.group(1)) for k in synthesis if (m := re.match(r"(\d+)x\1/", k))})
    state["synthesis.b4.const"] = take(synthesis, "4x4/Const/const", "G_synthesis")[0]
    for r in resolutions:
        layers = [("Conv", "conv1")] if r == 4 else [("Conv0_up", "conv0"), ("Conv1", "conv1")]
        for tf_name, ours in layers:
            scope = f"{r}x{r}/{tf_name}"
            weight = take(synthesis, f"{scope}/weight", "G_synthesis")
            if tf_name == "Conv0_up":
                weight = weight.flip([0, 1])
            k, _, fan_in, _ = weight.shape
            prefix = f"synthesis.b{r}.{ours}."
            state[prefix + "weight"] = weight.permute(3, 2, 0, 1) / math.sqrt(fan_in * k * k)
            state[prefix + "bias"] = take(synthesis, f"{scope}/bias", "G_synthesis")
            state[prefix + "noise_strength"] = take(
                synthesis, f"{scope}/noise_strength", "G_synthesis"
            ).reshape([])
            state[prefix + "affine.weight"] = take(synthesis, f"{scope}/mod_weight", "G_synthesis").t()
            state[prefix + "affine.bias"] = take(synthesis, f"{scope}/mod_bias", "G_synthesis") + 1.0
        scope = f"{r}x{r}/ToRGB"
        prefix = f"synthesis.b{r}.torgb."
        state[prefix + "weight"] = take(synthesis, f"{scope}/weight", "G_synthesis").permute(3, 2, 0, 1)
        state[prefix + "bias"] = take(synthesis, f"{scope}/bias", "G_synthesis")
        state[prefix + "affine.weight"] = take(synthesis, f"{scope}/mod_weight", "G_synthesis").t()
        state[prefix + "affine.bias"] = take(synthesis, f"{scope}/mod_bias", "G_synthesis") + 1.0
    for j, layer in enumerate(noise_layers(resolutions)):
        state[f"synthesis.{layer}.noise_const"] = take(synthesis, f"noise{j}", "G_synthesis")[0, 0]
    settings = {
        "conv_clamp": plain(kwargs.get("conv_clamp")),
        "mapping_lr_multiplier": float(kwargs.get("mapping_lrmul", 0.01)),
    }
    source = f"NVIDIA TensorFlow {release} pickle"
    return Foreign({k: v.contiguous() for k, v in state.items()}, settings, source)
