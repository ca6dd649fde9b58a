"""From a foreign file's tensors to a StyleGAN2Generator: the config inferred from the shapes, the weights checked and loaded.

Every reader (``nvidia.py``, ``tensorflow.py``, ``rosinality.py``) renames a file's tensors to our
names (those of NVIDIA's PyTorch code, see ``stylegan2.py``) and hands back a :class:`Foreign`;
:func:`build_generator` infers the architecture from the tensor shapes, builds the generator,
loads the weights with every name and shape checked, and records what the file was recognised as.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brgm_pyro.errors import CheckpointError
from brgm_pyro.stylegan2 import StyleGAN2Generator

__all__ = ["SUPPORTED", "Foreign", "as_float", "build_generator", "check_filter", "infer_config", "noise_layers", "plain"]

#: What the readers accept, for the sentence that refuses anything else.
SUPPORTED = (
    "StyleGAN2 generators (stylegan2-ada-pytorch's training/networks.py, stylegan3's "
    "training/networks_stylegan2.py, NVIDIA's TensorFlow StyleGAN2, rosinality's stylegan2-pytorch)"
)


@dataclass
class Foreign:
    """What a reader found: ``state`` in our names, ``settings`` the shapes cannot tell, and ``source``.

    ``settings`` holds ``conv_clamp`` and ``mapping_lr_multiplier``; ``source`` names the format and
    the implementation that wrote it (e.g. "NVIDIA stylegan2-ada-pytorch pickle").
    """

    state: dict[str, torch.Tensor]
    settings: dict[str, Any]
    source: str


def plain(value: Any) -> Any:
    """A numpy scalar as a Python number (configs are JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def as_float(value: Any, path: Path, name: str) -> torch.Tensor:
    """A stored weight as a contiguous float32 tensor, or a CheckpointError naming it."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.array(value))
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise CheckpointError(
            f"{path} stores '{name}' as something other than a float tensor; the file is corrupt."
        )
    return value.detach().float().contiguous()


def check_filter(value: Any, expected: torch.Tensor, path: Path, name: str) -> None:
    """Refuse a file whose resampling filter is not the ``[1, 3, 3, 1]`` one our layers use."""
    value = torch.as_tensor(value).float()
    if value.shape != expected.shape or not torch.allclose(value, expected, atol=1e-6):
        raise CheckpointError(
            f"{path} resamples with a filter other than [1, 3, 3, 1] ('{name}'); this variant is not supported."
        )


def noise_layers(resolutions: list[int]) -> list[str]:
    """Layer names in the order of the TensorFlow and rosinality noise inputs (``noise{j}``)."""
    layers = []
    for r in resolutions:
        layers += ["b4.conv1"] if r == 4 else [f"b{r}.conv0", f"b{r}.conv1"]
    return layers


def infer_config(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """Resolution, channels, latent sizes, mapping depth and channel_base/max from the tensor shapes.

    ``state`` maps our parameter names to anything with a ``shape`` (tensors, or shapes alone). Raises
    :class:`CheckpointError` when the shapes are not those of one StyleGAN2 generator.
    """
    try:
        return _infer_config(state, path)
    except (KeyError, IndexError) as err:
        raise CheckpointError(
            f"{path} does not hold a complete StyleGAN2 generator (no usable {err}); the file is corrupt or not supported."
        ) from None


def _infer_config(state: dict[str, Any], path: Path) -> dict[str, Any]:
    fcs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    blocks = sorted(
        int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k))
    )
    if (
        not fcs
        or fcs != list(range(len(fcs)))
        or not blocks
        or blocks != [2**i for i in range(2, 2 + len(blocks))]
    ):
        raise CheckpointError(f"{path} does not hold a complete StyleGAN2 mapping and synthesis network.")
    w_dim = state[f"mapping.fc{fcs[-1]}.weight"].shape[0]
    z_dim = state["mapping.fc0.weight"].shape[1]
    for i in fcs:
        expected = (w_dim, z_dim if i == 0 else w_dim)
        if tuple(state[f"mapping.fc{i}.weight"].shape) != expected:
            raise CheckpointError(
                f"{path} has a mapping layer of shape {tuple(state[f'mapping.fc{i}.weight'].shape)} where "
                f"{expected} is expected; mapping networks with hidden widths other than w_dim are not "
                "supported."
            )
    channels = {r: state[f"synthesis.b{r}.conv1.weight"].shape[0] for r in blocks}
    resolution = blocks[-1]
    channel_max = max(channels.values())
    below = [r for r in blocks if channels[r] < channel_max]
    channel_base = channels[below[0]] * below[0] if below else channel_max * resolution
    if any(min(channel_base // r, channel_max) != c for r, c in channels.items()):
        raise CheckpointError(
            f"{path} has feature maps {channels} per resolution, not of the form min(channel_base / R, "
            "channel_max); not supported."
        )
    return {
        "resolution": resolution,
        "channels": state[f"synthesis.b{resolution}.torgb.weight"].shape[0],
        "z_dim": z_dim,
        "w_dim": w_dim,
        "mapping_layers": len(fcs),
        "channel_base": channel_base,
        "channel_max": channel_max,
    }


def _describe(source: str, config: dict[str, Any]) -> str:
    """One line: what the file was recognised as, e.g. "..., StyleGAN2 generator, 1024 px, 3 channels, config f"."""
    config_f = (32768, 512, 8, 512, 512)
    size = (
        config["channel_base"],
        config["channel_max"],
        config["mapping_layers"],
        config["z_dim"],
        config["w_dim"],
    )
    shape = (
        "config f"
        if size == config_f
        else f"channel_base {size[0]}, channel_max {size[1]}, {size[2]} mapping layers, w_dim {size[4]}"
    )
    clamp = f", conv_clamp {config['conv_clamp']:g}" if config.get("conv_clamp") is not None else ""
    plural = "s" if config["channels"] > 1 else ""
    return (
        f"{source}, StyleGAN2 generator, {config['resolution']} px, {config['channels']} channel{plural}, "
        f"{shape}{clamp}"
    )


def build_generator(found: Foreign, path: Path, source_format: str) -> StyleGAN2Generator:
    """The generator whose weights are ``found.state``, in eval mode, with its prior statistics computed.

    ``mapping.w_avg`` is the file's running average of w when it has one (else the sample mean);
    ``G.info`` records the file, its format and ``recognised``, the one-line description.
    """
    config = {**infer_config(found.state, path), **found.settings}
    try:
        G = StyleGAN2Generator(**config, compute_stats=False)
    except ValueError as err:
        raise CheckpointError(f"{path} holds a generator this package cannot build: {err}") from None
    expected = G.state_dict()
    has_w_avg = "mapping.w_avg" in found.state
    state = {**found.state, "w_avg": expected["w_avg"], "w_std": expected["w_std"]}
    state.setdefault("mapping.w_avg", expected["mapping.w_avg"])
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match a StyleGAN2 generator of its own shape (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); this variant is not supported."
        )
    for key, value in expected.items():
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"{path} stores '{key}' with shape {tuple(state[key].shape)} where {tuple(value.shape)} is "
                "expected; the file is corrupt or of an unsupported variant."
            )
    G.load_state_dict(state, strict=True)
    G.compute_w_stats()
    if not has_w_avg:
        G.mapping.w_avg.copy_(G.w_avg)
    G.source_format = source_format
    G.info = {
        "source": str(path),
        "source_format": source_format,
        "recognised": _describe(found.source, config),
    }
    return G.eval()
