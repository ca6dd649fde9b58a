"""NVIDIA PyTorch pickles as stylegan2-ada-pytorch's and stylegan3's training loops write them.

Facts from ``torch_utils/persistence.py``, ``training/training_loop.py`` and ``training/networks.py``
(stylegan2-ada-pytorch) / ``training/networks_stylegan2.py`` (stylegan3): a protocol-4
``pickle.dump`` of the snapshot dict (ada: ``training_set_kwargs, G, D, G_ema, augment_pipe``;
stylegan3: ``G, D, G_ema, augment_pipe, training_set_kwargs``); every network reduces to
``_reconstruct_persistent_obj(meta)`` with ``meta = dict(type="class", version=6, module_src,
class_name, state)``: the bare class name and the module's ``__dict__``, that is torch's own fields,
then the attributes each class sets, ``_init_args`` and ``_init_kwargs`` (EasyDicts where the
training script passes them). ``module_src`` is a placeholder (:func:`nvidia_source`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brgm_pyro.checkpoints.nvidia import STYLEGAN2_MARKERS, STYLEGAN3_MARKERS, STYLEGAN3_RELEASE_MARKER
from brgm_pyro.stylegan2 import StyleGAN2Generator, fir_filter
from foreign_files.generators import perturbed
from foreign_files.pickling import EasyDict, dump, never_called

#: The globals of NVIDIA's published PyTorch pickles (numpy 1.x names), in the order they first appear.
NVIDIA_GLOBALS = [
    "torch_utils.persistence._reconstruct_persistent_obj",
    "collections.OrderedDict",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_tensor_v2",
    "torch.storage._load_from_bytes",
    "numpy.core.multiarray.scalar",
    "numpy.dtype",
    "dnnlib.util.EasyDict",
]


def nvidia_source(sentinel: Path, markers: tuple[str, ...] = STYLEGAN2_MARKERS) -> str:
    """A placeholder ``module_src``: one line per marker, then code that leaves ``sentinel`` if run."""
    lines = [f"{marker}...)" for marker in markers]
    return "\n".join(lines) + f"\nopen({str(sentinel)!r}, 'w').close()\nraise SystemExit('never run this')\n"


class Persistent:
    """One network as ``torch_utils.persistence`` writes it: the call ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, class_name: str, module_src: str, state: dict) -> None:
        self.class_name, self.module_src, self.state = class_name, module_src, state

    def __reduce__(self):
        meta = dict(
            type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state
        )
        return never_called, (meta,), None


class _NvidiaWriter:
    """Builds the record tree of NVIDIA's ``Generator`` for the weights of one of our generators."""

    def __init__(self, G: StyleGAN2Generator, source: str, layout: str, architecture: str) -> None:
        self.sd = {k: v.detach().clone() for k, v in G.state_dict().items()}
        self.G, self.source, self.architecture = G, source, architecture
        self.stylegan3 = layout == "stylegan3"
        self.conv_clamp = G.config["conv_clamp"]
        # train.py enables mixed precision (4 resolutions) and the clamp together; --fp32 disables both.
        self.num_fp16_res = 4 if self.conv_clamp is not None else 0

    def record(
        self,
        class_name: str,
        attrs: dict,
        init_args: tuple,
        init_kwargs: dict,
        parameters=(),
        buffers=(),
        modules=(),
    ) -> Persistent:
        state = dict(torch.nn.Module().__dict__)  # torch's own fields, in torch's order
        state["training"] = False
        state["_parameters"] = {n: torch.nn.Parameter(t.clone(), requires_grad=False) for n, t in parameters}
        state["_buffers"] = {n: t.clone() for n, t in buffers}
        state["_modules"] = dict(modules)
        state.update(attrs)
        state["_init_args"], state["_init_kwargs"] = init_args, init_kwargs
        return Persistent(class_name, self.source, state)

    def features(self, in_f: int, out_f: int) -> dict:
        return {"in_features": in_f, "out_features": out_f} if self.stylegan3 else {}

    def channels(self, in_c: int, out_c: int, w_dim: int | None = None) -> dict:
        if not self.stylegan3:
            return {}
        return {"in_channels": in_c, "out_channels": out_c, **({} if w_dim is None else {"w_dim": w_dim})}

    def fully_connected(
        self, prefix: str, lr_multiplier: float, activation: str, init_kwargs: dict
    ) -> Persistent:
        weight = self.sd[prefix + "weight"]
        out_f, in_f = weight.shape
        attrs = {
            **self.features(in_f, out_f),
            "activation": activation,
            "weight_gain": lr_multiplier / np.sqrt(in_f),
            "bias_gain": lr_multiplier,
        }
        params = [("weight", weight), ("bias", self.sd[prefix + "bias"])]
        return self.record("FullyConnectedLayer", attrs, (in_f, out_f), init_kwargs, params)

    def affine(self, prefix: str) -> Persistent:
        return self.fully_connected(prefix + "affine.", 1, "linear", {"bias_init": 1})

    def synthesis_layer(self, prefix: str, resolution: int, up: int) -> Persistent:
        weight = self.sd[prefix + "weight"]
        out_c, in_c = weight.shape[:2]
        attrs = {
            **self.channels(in_c, out_c, self.G.w_dim),
            "resolution": resolution,
            "up": up,
            "use_noise": True,
            "activation": "lrelu",
            "conv_clamp": self.conv_clamp,
            "padding": 1,
            "act_gain": np.sqrt(2),
        }
        kwargs = {"w_dim": self.G.w_dim, "resolution": resolution}
        if up == 2:
            kwargs.update(up=2, resample_filter=[1, 3, 3, 1])
        kwargs.update(conv_clamp=self.conv_clamp, channels_last=False)
        params = [(n, self.sd[prefix + n]) for n in ("weight", "noise_strength", "bias")]
        buffers = [("resample_filter", fir_filter()), ("noise_const", self.sd[prefix + "noise_const"])]
        return self.record(
            "SynthesisLayer", attrs, (in_c, out_c), kwargs, params, buffers, [("affine", self.affine(prefix))]
        )

    def torgb(self, prefix: str) -> Persistent:
        weight = self.sd[prefix + "weight"]
        out_c, in_c = weight.shape[:2]
        attrs = {
            **self.channels(in_c, out_c, self.G.w_dim),
            "conv_clamp": self.conv_clamp,
            "weight_gain": 1 / np.sqrt(in_c),
        }
        kwargs = {"w_dim": self.G.w_dim, "conv_clamp": self.conv_clamp, "channels_last": False}
        params = [("weight", weight), ("bias", self.sd[prefix + "bias"])]
        return self.record(
            "ToRGBLayer", attrs, (in_c, out_c), kwargs, params, (), [("affine", self.affine(prefix))]
        )

    def skip(self, in_c: int, out_c: int) -> Persistent:
        """The 1x1 upsampling convolution of a 'resnet' block (``Conv2dLayer``, no bias)."""
        attrs = {
            **self.channels(in_c, out_c),
            "activation": "linear",
            "up": 2,
            "down": 1,
            "conv_clamp": None,
            "padding": 0,
            "weight_gain": 1 / np.sqrt(in_c),
            "act_gain": 1,
            "bias": None,
        }
        weight = torch.randn(out_c, in_c, 1, 1, generator=torch.Generator().manual_seed(in_c))
        kwargs = {
            "kernel_size": 1,
            "bias": False,
            "up": 2,
            "resample_filter": [1, 3, 3, 1],
            "channels_last": False,
        }
        return self.record(
            "Conv2dLayer",
            attrs,
            (in_c, out_c),
            kwargs,
            [("weight", weight)],
            [("resample_filter", fir_filter())],
        )

    def block_kwargs(self) -> dict:
        kwargs = {"fused_modconv_default": "inference_only"} if self.stylegan3 else {}
        kwargs["conv_clamp"] = self.conv_clamp
        if self.architecture != "skip":
            kwargs["architecture"] = self.architecture
        return kwargs

    def block(self, resolution: int, fp16_resolution: int) -> Persistent:
        prefix = f"synthesis.b{resolution}."
        out_c = self.sd[prefix + "conv1.weight"].shape[0]
        in_c = 0 if resolution == 4 else self.sd[prefix + "conv0.weight"].shape[1]
        is_last = resolution == self.G.resolution
        use_fp16 = resolution >= fp16_resolution
        modules = (
            [] if resolution == 4 else [("conv0", self.synthesis_layer(prefix + "conv0.", resolution, 2))]
        )
        modules.append(("conv1", self.synthesis_layer(prefix + "conv1.", resolution, 1)))
        if is_last or self.architecture == "skip":
            modules.append(("torgb", self.torgb(prefix + "torgb.")))
        if resolution > 4 and self.architecture == "resnet":
            modules.append(("skip", self.skip(in_c, out_c)))
        attrs = {
            "in_channels": in_c,
            "w_dim": self.G.w_dim,
            "resolution": resolution,
            "img_channels": self.G.channels,
            "is_last": is_last,
            "architecture": self.architecture,
            "use_fp16": use_fp16,
            "channels_last": False,
            **({"fused_modconv_default": "inference_only"} if self.stylegan3 else {}),
            "num_conv": 1 if resolution == 4 else 2,
            "num_torgb": 1 if (is_last or self.architecture == "skip") else 0,
        }
        kwargs = {
            "w_dim": self.G.w_dim,
            "resolution": resolution,
            "img_channels": self.G.channels,
            "is_last": is_last,
            "use_fp16": use_fp16,
            **self.block_kwargs(),
        }
        params = [("const", self.sd[prefix + "const"])] if resolution == 4 else []
        return self.record(
            "SynthesisBlock",
            attrs,
            (in_c, out_c),
            kwargs,
            params,
            [("resample_filter", fir_filter())],
            modules,
        )

    def synthesis_kwargs(self) -> dict:
        cfg = self.G.config
        kwargs = {"channel_base": cfg["channel_base"], "channel_max": cfg["channel_max"]}
        if self.stylegan3:
            kwargs["fused_modconv_default"] = "inference_only"
        kwargs.update(num_fp16_res=self.num_fp16_res, conv_clamp=self.conv_clamp)
        if self.architecture != "skip":
            kwargs["architecture"] = self.architecture
        return kwargs

    def synthesis(self) -> Persistent:
        G = self.G
        log2 = int(math.log2(G.resolution))
        fp16_resolution = max(2 ** (log2 + 1 - self.num_fp16_res), 8)
        resolutions = [2**i for i in range(2, log2 + 1)]
        attrs = {
            "w_dim": G.w_dim,
            "img_resolution": G.resolution,
            "img_resolution_log2": log2,
            "img_channels": G.channels,
            **({"num_fp16_res": self.num_fp16_res} if self.stylegan3 else {}),
            "block_resolutions": resolutions,
            "num_ws": G.num_ws,
        }
        kwargs = {
            "w_dim": G.w_dim,
            "img_resolution": G.resolution,
            "img_channels": G.channels,
            **self.synthesis_kwargs(),
        }
        blocks = [(f"b{r}", self.block(r, fp16_resolution)) for r in resolutions]
        return self.record("SynthesisNetwork", attrs, (), kwargs, modules=blocks)

    def mapping(self, c_dim: int) -> Persistent:
        G, layers = self.G, self.G.config["mapping_layers"]
        attrs = {
            "z_dim": G.z_dim,
            "c_dim": c_dim,
            "w_dim": G.w_dim,
            "num_ws": G.num_ws,
            "num_layers": layers,
            "w_avg_beta": 0.998 if self.stylegan3 else 0.995,
        }
        fcs = [
            (
                f"fc{i}",
                self.fully_connected(
                    f"mapping.fc{i}.", 0.01, "lrelu", {"activation": "lrelu", "lr_multiplier": 0.01}
                ),
            )
            for i in range(layers)
        ]
        kwargs = {
            "z_dim": G.z_dim,
            "c_dim": c_dim,
            "w_dim": G.w_dim,
            "num_ws": G.num_ws,
            "num_layers": layers,
        }
        return self.record(
            "MappingNetwork", attrs, (), kwargs, (), [("w_avg", self.sd["mapping.w_avg"])], fcs
        )

    def generator(self, c_dim: int) -> Persistent:
        G = self.G
        mapping_kwargs = EasyDict(num_layers=G.config["mapping_layers"])
        if self.stylegan3:  # train.py passes the synthesis settings at the top level
            kwargs = {
                "z_dim": G.z_dim,
                "w_dim": G.w_dim,
                "mapping_kwargs": mapping_kwargs,
                **self.synthesis_kwargs(),
            }
        else:
            kwargs = {
                "z_dim": G.z_dim,
                "w_dim": G.w_dim,
                "mapping_kwargs": mapping_kwargs,
                "synthesis_kwargs": EasyDict(self.synthesis_kwargs()),
            }
        kwargs.update(c_dim=c_dim, img_resolution=G.resolution, img_channels=G.channels)
        attrs = {
            "z_dim": G.z_dim,
            "c_dim": c_dim,
            "w_dim": G.w_dim,
            "img_resolution": G.resolution,
            "img_channels": G.channels,
            "num_ws": G.num_ws,
        }
        modules = [("synthesis", self.synthesis()), ("mapping", self.mapping(c_dim))]
        return self.record("Generator", attrs, (), kwargs, modules=modules)


def nvidia_generator(
    G: StyleGAN2Generator,
    source: str,
    layout: str = "stylegan2-ada-pytorch",
    architecture: str = "skip",
    c_dim: int = 0,
) -> Persistent:
    """The record of NVIDIA's StyleGAN2 ``Generator`` holding the weights of ``G``."""
    return _NvidiaWriter(G, source, layout, architecture).generator(c_dim)


def write_nvidia_pickle(
    G: StyleGAN2Generator,
    path: Path,
    sentinel: Path,
    *,
    layout: str = "stylegan2-ada-pytorch",
    architecture: str = "skip",
    c_dim: int = 0,
    G_ema: Persistent | None = None,
    extra: dict | None = None,
) -> Path:
    """A training snapshot as ``training_loop.py`` writes it, with ``G_ema`` holding the weights of ``G``.

    ``G`` of the snapshot (the training copy) holds other weights, so a loader that read it would be
    caught; ``G_ema`` replaces the generator record (e.g. a StyleGAN3 one).
    """
    markers = STYLEGAN2_MARKERS + ((STYLEGAN3_RELEASE_MARKER,) if layout == "stylegan3" else ())
    source = nvidia_source(sentinel, markers)
    if G_ema is None:
        G_ema = nvidia_generator(G, source, layout, architecture, c_dim)
    training = nvidia_generator(perturbed(G), source, layout, architecture, c_dim)
    D = Persistent(
        "Discriminator",
        source,
        {
            **torch.nn.Module().__dict__,
            "training": False,
            "_parameters": {"w": torch.nn.Parameter(torch.randn(4, 4), False)},
        },
    )
    training_set_kwargs = {
        "class_name": "training.dataset.ImageFolderDataset",
        "path": "data.zip",
        "use_labels": False,
        "max_size": 70000,
        "xflip": True,
        "resolution": G.resolution,
    }
    if layout == "stylegan3":
        data = dict(G=training, D=D, G_ema=G_ema, augment_pipe=None, training_set_kwargs=training_set_kwargs)
    else:
        data = dict(training_set_kwargs=training_set_kwargs, G=training, D=D, G_ema=G_ema, augment_pipe=None)
    data.update(extra or {})
    return dump(data, path)


def stylegan3_generator(sentinel: Path, radial: bool = False) -> Persistent:
    """The record of a tiny StyleGAN3 ``Generator`` (``networks_stylegan3.py``): input, L-layers, no blocks."""
    source = nvidia_source(sentinel, STYLEGAN3_MARKERS + ("class MappingNetwork(", "def modulated_conv2d("))

    def record(class_name: str, modules=(), parameters=(), **attrs: Any) -> Persistent:
        state = {
            **torch.nn.Module().__dict__,
            "training": False,
            "_modules": dict(modules),
            "_parameters": {n: torch.nn.Parameter(t, requires_grad=False) for n, t in parameters},
            **attrs,
        }
        return Persistent(class_name, source, state)

    def layer(i: int) -> Persistent:
        return record(
            "SynthesisLayer",
            [("affine", record("FullyConnectedLayer", parameters=[("weight", torch.randn(8, 8))]))],
            [("weight", torch.randn(8, 8, 3, 3))],
            conv_kernel=1 if radial else 3,
            use_radial_filters=radial,
        )

    names = [f"L{i}_36_8" for i in range(3)]
    synthesis = record(
        "SynthesisNetwork",
        [("input", record("SynthesisInput"))] + [(n, layer(i)) for i, n in enumerate(names)],
        layer_names=names,
    )
    mapping = record(
        "MappingNetwork", [("fc0", record("FullyConnectedLayer", parameters=[("weight", torch.randn(8, 8))]))]
    )
    kwargs = {
        "z_dim": 8,
        "w_dim": 8,
        "mapping_kwargs": EasyDict(num_layers=2),
        "channel_base": 1024,
        "channel_max": 64,
        "magnitude_ema_beta": 0.999,
        "c_dim": 0,
        "img_resolution": 16,
        "img_channels": 3,
    }
    if radial:
        kwargs.update(conv_kernel=1, use_radial_filters=True)
    return record(
        "Generator", [("synthesis", synthesis), ("mapping", mapping)], _init_args=(), _init_kwargs=kwargs
    )
