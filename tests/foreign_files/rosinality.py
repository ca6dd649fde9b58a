"""rosinality stylegan2-pytorch checkpoints as its ``train.py`` and ``convert_weight.py`` save them.

Facts from ``train.py``, ``convert_weight.py`` and ``model.py``: ``torch.save`` of the dicts those
scripts save, the state dict in ``model.Generator``'s names, shapes and registration order.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from brgm_pyro.stylegan2 import StyleGAN2Generator, fir_filter
from foreign_files.generators import perturbed


def to_rosinality(G: StyleGAN2Generator) -> dict[str, torch.Tensor]:
    """Our state dict in rosinality's ``model.Generator`` names, shapes, scales and registration order."""
    sd = {k: v.clone() for k, v in G.state_dict().items()}
    resolutions = G.synthesis.block_resolutions
    blur = fir_filter() * 4

    def styled_conv(theirs: str, ours: str, up: bool) -> dict[str, torch.Tensor]:
        w = sd[f"synthesis.{ours}.weight"]
        out = {f"{theirs}.conv.weight": (w * math.sqrt(w.shape[1] * w.shape[2] * w.shape[3]))[None]}
        if up:
            out[f"{theirs}.conv.blur.kernel"] = blur
        out[f"{theirs}.conv.modulation.weight"] = sd[f"synthesis.{ours}.affine.weight"]
        out[f"{theirs}.conv.modulation.bias"] = sd[f"synthesis.{ours}.affine.bias"]
        out[f"{theirs}.noise.weight"] = sd[f"synthesis.{ours}.noise_strength"].reshape(1)
        out[f"{theirs}.activate.bias"] = sd[f"synthesis.{ours}.bias"]
        return out

    def to_rgb(theirs: str, block: str) -> dict[str, torch.Tensor]:
        out = {f"{theirs}.bias": sd[f"synthesis.{block}.torgb.bias"].reshape(1, -1, 1, 1)}
        if block != "b4":
            out[f"{theirs}.upsample.kernel"] = blur
        out[f"{theirs}.conv.weight"] = sd[f"synthesis.{block}.torgb.weight"][None]
        out[f"{theirs}.conv.modulation.weight"] = sd[f"synthesis.{block}.torgb.affine.weight"]
        out[f"{theirs}.conv.modulation.bias"] = sd[f"synthesis.{block}.torgb.affine.bias"]
        return out

    out = {}
    for i in range(G.config["mapping_layers"]):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    out.update(styled_conv("conv1", "b4.conv1", False))
    out.update(to_rgb("to_rgb1", "b4"))
    for m, r in enumerate(resolutions[1:]):
        out.update(styled_conv(f"convs.{2 * m}", f"b{r}.conv0", True))
        out.update(styled_conv(f"convs.{2 * m + 1}", f"b{r}.conv1", False))
    for m, r in enumerate(resolutions[1:]):
        out.update(to_rgb(f"to_rgbs.{m}", f"b{r}"))
    noise_layers = ["b4.conv1"] + [f"b{r}.conv{c}" for r in resolutions[1:] for c in (0, 1)]
    for j, layer in enumerate(noise_layers):
        out[f"noises.noise_{j}"] = sd[f"synthesis.{layer}.noise_const"][None, None]
    return out


def _adam_state(tensors: dict[str, torch.Tensor]) -> dict:
    """An Adam optimizer's state dict after one step, as train.py saves ``g_optim``/``d_optim``."""
    params = [torch.nn.Parameter(t.clone()) for t in tensors.values()]
    optimizer = torch.optim.Adam(params, lr=0.002, betas=(0.0, 0.99))
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    return optimizer.state_dict()


def write_rosinality(
    G: StyleGAN2Generator, path: Path, writer: str = "convert_weight", legacy: bool = False
) -> Path:
    """``torch.save`` of what rosinality's ``convert_weight.py`` or ``train.py`` saves, with g_ema holding G."""
    g_ema = to_rosinality(G)
    if writer == "convert_weight":
        ckpt = {"g_ema": g_ema, "latent_avg": G.mapping.w_avg.clone()}
    else:
        g = to_rosinality(perturbed(G))
        d = {"convs.0.0.weight": torch.randn(8, 3, 1, 1), "final_linear.1.bias": torch.zeros(1)}
        # train.py's command line (a Namespace of plain values); a few of its options suffice here
        args = argparse.Namespace(
            size=G.resolution, latent=G.w_dim, n_mlp=G.config["mapping_layers"], ckpt=None
        )
        ckpt = {
            "g": g,
            "d": d,
            "g_ema": g_ema,
            "g_optim": _adam_state(g),
            "d_optim": _adam_state(d),
            "args": args,
            "ada_aug_p": 0.0,
        }
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path
