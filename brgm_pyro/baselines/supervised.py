"""The "supervised" baseline: end-to-end networks trained on Fashion-MNIST pairs, one per task (SRFBN/SN-PatchGAN's role).

Four networks ship as package data in ``weights/`` (safetensors, with a card and the training
curves next to each), made by ``scripts/train_baselines.py``:

=========  ==========================================================  ======================
task       trained on (32x32 grayscale Fashion-MNIST, train split)      network
=========  ==========================================================  ======================
sr-x2      y = Downsample(2, "bicubic")(x), 16x16 inputs                 SuperResolutionNet
sr-x4      y = Downsample(4, "bicubic")(x), 8x8 inputs                   SuperResolutionNet
sr-x8      y = Downsample(8, "bicubic")(x), 4x4 inputs                   SuperResolutionNet
inpaint    y = m * x, m of the seven kinds of :mod:`masks`, jittered    InpaintingNet
=========  ==========================================================  ======================

A supervised network knows only the corruption it was trained on; that is the point of the
comparison. Asked for any other operator it raises InputError, unless ``allow_mismatch=True``,
which runs the network whose input size matches (the x4 network on 8x8 inputs made by a blur and
box downsampling, say) to measure how it copes with a corruption it has not seen.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from brgm_pyro.baselines.common import check_observation, clean_shape, operator_chain, read_weights
from brgm_pyro.baselines.networks import InpaintingNet, SuperResolutionNet
from brgm_pyro.errors import CheckpointError, InputError, MissingWeightsError
from brgm_pyro.forward import Blur, Downsample, Mask, Operator
from brgm_pyro.io import PathLike, atomic_path

__all__ = [
    "FORMAT",
    "IMAGE_SIZE",
    "TASKS",
    "WEIGHTS_DIR",
    "build_network",
    "load_network",
    "save_network",
    "supervised",
    "task_corruption",
    "weights_path",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FORMAT = "brgm-pyro-supervised-baseline"
IMAGE_SIZE = 32
# task -> super-resolution factor (None: inpainting)
TASKS = {"sr-x2": 2, "sr-x4": 4, "sr-x8": 8, "inpaint": None}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise InputError(f"Unknown supervised task {task!r}; choose one of {', '.join(TASKS)}.")


def build_network(task: str, **config: int) -> nn.Module:
    """A freshly initialised network for ``task``; ``config`` overrides the architecture's defaults."""
    _check_task(task)
    if TASKS[task] is None:
        return InpaintingNet(**config)
    config = {"factor": TASKS[task], **config}
    if config["factor"] != TASKS[task]:
        raise InputError(f"A {task} network upsamples by {TASKS[task]}, not {config['factor']}; drop the factor.")
    return SuperResolutionNet(**config)


def task_corruption(task: str) -> Operator | None:
    """The operator a super-resolution task was trained on; None for inpainting (its masks vary)."""
    _check_task(task)
    return None if TASKS[task] is None else Downsample(TASKS[task], kernel="bicubic")


def weights_path(task: str) -> Path:
    """The shipped weight file of ``task``: ``weights/supervised-TASK.safetensors``."""
    _check_task(task)
    return WEIGHTS_DIR / f"supervised-{task}.safetensors"


def save_network(network: nn.Module, task: str, path: PathLike) -> Path:
    """Write the network's weights and its task and architecture (safetensors header) atomically."""
    metadata = {
        "format": FORMAT,
        "task": task,
        "architecture": type(network).__name__,
        "config": json.dumps(network.config),
    }
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return Path(path)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> tuple[str, nn.Module]:
    tensors, metadata = read_weights(path)
    if metadata.get("format") != FORMAT or metadata.get("task") not in TASKS:
        raise CheckpointError(
            f"{path} is not a supervised baseline network of brgm-pyro (no {FORMAT} header); "
            "write it with scripts/train_baselines.py."
        )
    network = build_network(metadata["task"], **json.loads(metadata["config"]))
    network.load_state_dict(tensors)
    return metadata["task"], network.eval().requires_grad_(False)


def load_network(path: PathLike) -> tuple[str, nn.Module]:
    """(task, network in eval mode) from a weight file written by :func:`save_network`; cached per file version."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(
            f"The supervised network {path} is missing; train it with `python scripts/train_baselines.py` "
            "or reinstall brgm-pyro."
        )
    return _load(str(path.resolve()), path.stat().st_mtime_ns)


def _describe(f: Operator) -> str:
    """A one-line name of an operator for messages, e.g. Compose(Blur(7x7), Downsample(4, 'box'))."""
    if isinstance(f, Downsample):
        kernel = repr(f.kernel_name) if f.kernel_name is not None else "kernel tensor"
        return f"Downsample({f.factor}, {kernel})"
    if isinstance(f, Blur):
        return f"Blur({f.kernel.shape[0]}x{f.kernel.shape[1]})"
    chain = operator_chain(f)
    if len(chain) > 1:
        return "Compose(" + ", ".join(_describe(operator) for operator in chain) + ")"
    return type(f).__name__


def _task_for(f: Operator, y: torch.Tensor, shape: torch.Size, allow_mismatch: bool) -> str:
    """The task whose network applies to f: the one trained on f, or with ``allow_mismatch`` the one for y's size."""
    chain = operator_chain(f)
    if shape[1] != 1:
        raise InputError(f"The supervised networks take grayscale images (1 channel), got {shape[1]}; convert y first.")
    if isinstance(f, Mask):
        task = "inpaint"
    elif isinstance(f, Downsample) and f.kernel_name == "bicubic" and f.factor in TASKS.values():
        task = f"sr-x{f.factor}"
    else:
        factor = shape[-1] // y.shape[-1]
        if all(isinstance(operator, Mask) for operator in chain):
            nearest = "inpaint"
        elif not any(isinstance(operator, Mask) for operator in chain) and f"sr-x{factor}" in TASKS:
            nearest = f"sr-x{factor}"
        else:
            raise InputError(
                f"No supervised network applies to {_describe(f)}: they are trained for bicubic x2, x4, x8 "
                "downsampling and for masks; use a method that takes any corruption, such as brgm."
            )
        if not allow_mismatch:
            trained = "masks" if nearest == "inpaint" else _describe(task_corruption(nearest))
            raise InputError(
                f"The supervised {nearest} network was trained on {trained} only, not on {_describe(f)}; "
                "pass allow_mismatch=True to run it anyway, as a test outside its training."
            )
        task = nearest
    if shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE) and not allow_mismatch:
        raise InputError(
            f"The supervised networks are trained on {IMAGE_SIZE}x{IMAGE_SIZE} images, not "
            f"{shape[-2]}x{shape[-1]}; pass allow_mismatch=True to run them at another size."
        )
    return task


def supervised(
    y: torch.Tensor,
    f: Operator,
    G: nn.Module | None = None,
    allow_mismatch: bool = False,
    weights: PathLike | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Reconstruct y (B, 1, h, w) in [0, 1] with the network trained for f; images (B, 1, H, W) in [0, 1].

    Args:
        y, f, G: as for ``bp.reconstruct``; G only fixes the output size.
        allow_mismatch: run the network whose input size matches even when f is not the corruption
            it was trained on (another kernel, a blur first, another mask size).
        weights: a weight file of :func:`save_network` instead of the shipped one for the task.
        batch_size: images per forward pass.

    For a Mask, observed pixels are returned exactly as in y.
    """
    check_observation(y, f)
    shape = clean_shape(y, f, G)
    task = _task_for(f, y, shape, allow_mismatch)
    path = weights_path(task) if weights is None else Path(weights)
    trained_task, network = load_network(path)
    if trained_task != task:
        raise InputError(f"{path} holds the {trained_task} network, but f needs the {task} one; pass its weights.")
    if task == "inpaint" and any(size % 2**network.config["levels"] for size in shape[-2:]):
        raise InputError(
            f"The inpainting network needs sides divisible by {2 ** network.config['levels']}, "
            f"got {shape[-2]}x{shape[-1]}; crop or pad the images."
        )
    network = network.to(y.device)
    observed = f.observed(shape, device=y.device, dtype=y.dtype).expand(shape) if task == "inpaint" else None
    outputs = []
    with torch.no_grad():
        for start in range(0, y.shape[0], batch_size):
            batch = y[start : start + batch_size]
            if observed is None:
                outputs.append(network(batch))
            else:
                outputs.append(network(batch, observed[start : start + batch_size]))
    return torch.cat(outputs)
