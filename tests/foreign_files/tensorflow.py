"""NVIDIA TensorFlow pickles as StyleGAN2's training loop writes them (stylegan2 and stylegan2-ada TF).

Facts from ``dnnlib/tflib/network.py``, ``training/misc.py``, ``training/networks_stylegan2.py`` and
``run_training.py``: ``pickle.dump((G, D, Gs), protocol=pickle.HIGHEST_PROTOCOL)`` (4 on Python
3.6/3.7), each ``Network`` pickled through ``__getstate__`` (version 4 in stylegan2, 5 with input and
output shapes and names in stylegan2-ada), variables as (name relative to the network's scope,
numpy value) in creation order, arrays and scalars of numpy 1.x. These files cannot be produced
here (they need TensorFlow 1.x), so this writer is the only source of them in the tests.
``build_module_src`` is a placeholder (:func:`tensorflow_source`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from brgm_pyro.checkpoints.tensorflow import TF_STYLEGAN2_MARKER
from brgm_pyro.stylegan2 import StyleGAN2Generator
from foreign_files.generators import perturbed
from foreign_files.pickling import Network, dump


def tensorflow_source(
    sentinel: Path, functions: tuple[str, ...] = ("G_main", "G_mapping", "G_synthesis_stylegan2")
) -> str:
    """A placeholder ``build_module_src``: the build functions and the marker, then code that leaves ``sentinel``."""
    lines = [f"def {name}(...)" for name in functions] + [f"{TF_STYLEGAN2_MARKER}...)"]
    return "\n".join(lines) + f"\nopen({str(sentinel)!r}, 'w').close()\nraise SystemExit('never run this')\n"


def tf_variables(G: StyleGAN2Generator) -> tuple[list, list]:
    """(mapping, synthesis) variables of G in TensorFlow StyleGAN2's names, layouts, scales and creation order."""
    sd = {k: v.detach().clone().numpy() for k, v in G.state_dict().items()}
    mapping = []
    for i in range(G.config["mapping_layers"]):
        mapping += [
            (f"Dense{i}/weight", sd[f"mapping.fc{i}.weight"].T),
            (f"Dense{i}/bias", sd[f"mapping.fc{i}.bias"]),
        ]
    noise_layers = ["b4.conv1"] + [f"b{r}.conv{c}" for r in G.synthesis.block_resolutions[1:] for c in (0, 1)]
    synthesis = [
        (f"noise{j}", sd[f"synthesis.{layer}.noise_const"][None, None])
        for j, layer in enumerate(noise_layers)
    ]
    synthesis.append(("4x4/Const/const", sd["synthesis.b4.const"][None]))
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
                (
                    f"{r}x{r}/{tf_name}/noise_strength",
                    np.float32(sd[p + "noise_strength"]),
                ),  # session.run: a scalar
                (f"{r}x{r}/{tf_name}/bias", sd[p + "bias"]),
            ]
        p = f"synthesis.b{r}.torgb."
        synthesis += [
            (f"{r}x{r}/ToRGB/weight", sd[p + "weight"].transpose(2, 3, 1, 0)),
            (f"{r}x{r}/ToRGB/mod_weight", sd[p + "affine.weight"].T),
            (f"{r}x{r}/ToRGB/mod_bias", sd[p + "affine.bias"] - 1),
            (f"{r}x{r}/ToRGB/bias", sd[p + "bias"]),
        ]
    return mapping, synthesis


TF_FUNCTIONS = {
    "stylegan2": ("G_main", "G_mapping", "G_synthesis_stylegan2"),
    "stylegan2-ada": ("G_main", "G_mapping", "G_synthesis"),
}


def _tf_networks(
    G: StyleGAN2Generator,
    variables: tuple[list, list],
    source: str,
    release: str,
    functions: tuple[str, str, str],
    static: dict,
    w_avg: np.ndarray,
) -> Network:
    """Gs as ``Network.__getstate__`` returns it: its own variables, its mapping and synthesis components."""
    mapping, synthesis = variables

    def network(
        name: str, function: str, own: list, static_kwargs: dict, components: dict | None = None
    ) -> Network:
        state = {
            "version": 4 if release == "stylegan2" else 5,
            "name": name,
            "static_kwargs": static_kwargs,
            "components": components or {},
            "build_module_src": source,
            "build_func_name": function,
            "variables": own,
        }
        if release == "stylegan2-ada":
            state.update(
                input_shapes=[[None, G.z_dim], [None, 0]],
                output_shapes=[[None, G.channels, G.resolution, G.resolution]],
                input_names=["latents_in", "labels_in"],
                output_names=["images_out"],
            )
        return Network(state)

    components = {
        "synthesis": network("G_synthesis", functions[2], synthesis, dict(static)),
        "mapping": network("G_mapping", functions[1], mapping, {"dlatent_broadcast": G.num_ws, **static}),
    }
    return network(
        "Gs", functions[0], [("lod", np.float32(0.0)), ("dlatent_avg", w_avg)], dict(static), components
    )


def write_tf_pickle(
    G: StyleGAN2Generator,
    path: Path,
    sentinel: Path,
    *,
    variables: tuple[list, list] | None = None,
    release: str = "stylegan2",
    extra_kwargs: dict | None = None,
    functions: tuple[str, str, str] | None = None,
    source: str | None = None,
) -> Path:
    """``(G, D, Gs)`` as ``training_loop.py``'s ``misc.save_pkl`` writes it, with ``Gs`` holding the weights of G.

    ``release`` "stylegan2" writes NVlabs/stylegan2's records (config f: only the data set's
    settings in ``static_kwargs``); "stylegan2-ada" those of its TensorFlow release (its training
    settings, ``conv_clamp`` among them).
    """
    functions = functions or TF_FUNCTIONS[release]
    source = source or tensorflow_source(sentinel, functions)
    static = {"num_channels": G.channels, "resolution": G.resolution, "label_size": 0}
    if release == "stylegan2-ada":
        static.update(
            fmap_base=G.config["channel_base"] // 2,
            fmap_max=G.config["channel_max"],
            mapping_layers=G.config["mapping_layers"],
            num_fp16_res=4,
            conv_clamp=G.config["conv_clamp"],
        )
    static.update(extra_kwargs or {})
    Gs = _tf_networks(
        G, variables or tf_variables(G), source, release, functions, static, G.mapping.w_avg.numpy()
    )
    other = perturbed(G)
    training = _tf_networks(
        other, tf_variables(other), source, release, functions, static, other.mapping.w_avg.numpy()
    )
    training._state["name"] = "G"
    D = Network(
        {
            "version": 4,
            "name": "D",
            "static_kwargs": dict(static),
            "components": {},
            "build_module_src": source,
            "build_func_name": "D_stylegan2",
            "variables": [("Output/weight", np.ones((4, 1), np.float32))],
        }
    )
    return dump((training, D, Gs), path)
