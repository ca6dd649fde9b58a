"""rosinality's stylegan2-pytorch checkpoints (``.pt``): read with PyTorch's weights-only loader, renamed to our weights.

Format: ``torch.save`` of a dict holding the generator's state dict under ``g_ema``. Two writers:
``convert_weight.py`` saves ``{"g_ema", "latent_avg"}`` (plus ``g`` and ``d`` on request),
``train.py`` saves ``{"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}`` with ``args``
an ``argparse.Namespace`` and no running average of w. Read with ``torch.load(weights_only=True)``.
Their w+ layout is NVIDIA's: ``n_latent = 2 log2(size) - 2`` vectors, conv1 and to_rgb1 take the
first two, then each block takes three and shares the last with the next block's first conv, so
``G.synthesis`` takes their w+ tensors unchanged.

==========================================  ===================================  =================
rosinality                                  ours                                 transform
==========================================  ===================================  =================
style.{i}.weight / bias (i = 1..n_mlp)      mapping.fc{i-1}.weight / bias        --
latent_avg                                  mapping.w_avg                        --
input.input [1, C, 4, 4]                    synthesis.b4.const [C, 4, 4]         drop batch axis
conv1.*                                     synthesis.b4.conv1.*                 (layer rules)
convs.{2j}.*   (R = 2^(j+3))                synthesis.b{R}.conv0.*               (layer rules)
convs.{2j+1}.*                              synthesis.b{R}.conv1.*               (layer rules)
to_rgb1.* / to_rgbs.{j}.*                   synthesis.b4.torgb.* / b{R}.torgb.*  (ToRGB rules)
noises.noise_{j} [1, 1, R, R]               noise_const [R, R] of layer j        see build.noise_layers
==========================================  ===================================  =================

layer rules: ``conv.weight`` [1, O, I, k, k] -> ``weight`` [O, I, k, k] times ``1 / sqrt(I k k)``
(their run-time scale, applied before modulation and demodulation: folded in, it reproduces their
arithmetic exactly, ``1e-8`` included); ``conv.modulation.weight`` / ``.bias`` -> ``affine.weight`` /
``.bias`` (bias stored with its initial 1); ``noise.weight`` [1] -> ``noise_strength`` [];
``activate.bias`` -> ``bias``; ``conv.blur.kernel`` is checked and dropped.
ToRGB rules: ``conv.weight`` [1, C, I, 1, 1] -> ``weight`` [C, I, 1, 1] as is (their ``1 / sqrt(I)``
is our ``weight_gain`` on the style); ``conv.modulation.*`` -> ``affine.*``; ``bias`` [1, C, 1, 1] ->
``bias`` [C]; ``upsample.kernel`` is checked and dropped. Their ``EqualLinear`` stores ``W / lr_mul``
and applies ``W * lr_mul / sqrt(in)`` and ``b * lr_mul``, as our fully connected layer does, and their
upsampling (transposed conv of stride 2, then the [1, 3, 3, 1] filter with gain 4) is ours.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import pickle
import re
from pathlib import Path

import torch

from brgm_pyro.checkpoints.build import Foreign, as_float, check_filter, noise_layers
from brgm_pyro.checkpoints.unpickler import READ_ERRORS
from brgm_pyro.errors import CheckpointError
from brgm_pyro.stylegan2 import fir_filter

__all__ = ["read_rosinality"]


def _load(path: Path) -> dict:
    # train.py checkpoints carry the command line as an argparse.Namespace: plain attributes.
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds objects other than tensors ({str(err).splitlines()[0]}); it is refused because "
            "loading it could run code."
        ) from None
    except READ_ERRORS as err:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(err).__name__}: {err}); "
            "the file is truncated or corrupt, re-download it."
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("g_ema"), dict):
        raise CheckpointError(
            f"{path} has no 'g_ema' state dictionary; it is not a rosinality StyleGAN2 checkpoint."
        )
    return ckpt


def read_rosinality(path: Path) -> Foreign:
    """The generator ``g_ema`` of a rosinality checkpoint, in our names (read by the weights-only loader)."""
    ckpt = _load(path)
    theirs = {k: as_float(v, path, k) for k, v in ckpt["g_ema"].items()}
    n_mlp = len([k for k in theirs if re.fullmatch(r"style\.\d+\.weight", k)])
    log_size = 2 + len([k for k in theirs if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    resolutions = [2**i for i in range(2, log_size + 1)]
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in theirs:
            raise CheckpointError(
                f"{path} has no '{name}' in g_ema, so it is not a rosinality StyleGAN2 generator; not supported."
            )
        used.add(name)
        return theirs[name]

    state: dict[str, torch.Tensor] = {}
    for i in range(1, n_mlp + 1):
        state[f"mapping.fc{i - 1}.weight"] = take(f"style.{i}.weight")
        state[f"mapping.fc{i - 1}.bias"] = take(f"style.{i}.bias")
    if isinstance(ckpt.get("latent_avg"), torch.Tensor):
        state["mapping.w_avg"] = ckpt["latent_avg"].float().reshape(-1)
    state["synthesis.b4.const"] = take("input.input")[0]
    blur = fir_filter() * 4.0
    layers = [("conv1", "b4.conv1")] + [
        (f"convs.{2 * m + c}", f"b{r}.conv{c}") for m, r in enumerate(resolutions[1:]) for c in (0, 1)
    ]
    for name, ours in layers:
        weight = take(f"{name}.conv.weight")[0]
        _, fan_in, k, _ = weight.shape
        prefix = f"synthesis.{ours}."
        state[prefix + "weight"] = weight / math.sqrt(fan_in * k * k)
        state[prefix + "affine.weight"] = take(f"{name}.conv.modulation.weight")
        state[prefix + "affine.bias"] = take(f"{name}.conv.modulation.bias")
        state[prefix + "noise_strength"] = take(f"{name}.noise.weight").reshape([])
        state[prefix + "bias"] = take(f"{name}.activate.bias")
        if f"{name}.conv.blur.kernel" in theirs:
            check_filter(take(f"{name}.conv.blur.kernel"), blur, path, f"{name}.conv.blur.kernel")
    torgbs = [("to_rgb1", "b4")] + [(f"to_rgbs.{m}", f"b{r}") for m, r in enumerate(resolutions[1:])]
    for name, block in torgbs:
        prefix = f"synthesis.{block}.torgb."
        state[prefix + "weight"] = take(f"{name}.conv.weight")[0]
        state[prefix + "affine.weight"] = take(f"{name}.conv.modulation.weight")
        state[prefix + "affine.bias"] = take(f"{name}.conv.modulation.bias")
        state[prefix + "bias"] = take(f"{name}.bias").reshape(-1)
        if f"{name}.upsample.kernel" in theirs:
            check_filter(take(f"{name}.upsample.kernel"), blur, path, f"{name}.upsample.kernel")
    for j, layer in enumerate(noise_layers(resolutions)):
        state[f"synthesis.{layer}.noise_const"] = take(f"noises.noise_{j}")[0, 0]
    unknown = sorted(set(theirs) - used)
    if unknown:
        raise CheckpointError(
            f"{path} has parameters that a rosinality StyleGAN2 generator does not have "
            f"({', '.join(unknown[:3])}); this variant is not supported."
        )
    writer = (
        "train.py checkpoint"
        if "g_optim" in ckpt
        else "convert_weight.py output"
        if "latent_avg" in ckpt
        else "file"
    )
    settings = {"conv_clamp": None, "mapping_lr_multiplier": 0.01}
    return Foreign(
        {k: v.contiguous() for k, v in state.items()}, settings, f"rosinality stylegan2-pytorch {writer}"
    )
