"""Training of the two Fashion-MNIST feature networks (PerceptNet for phi, EvalNet for the metrics).

Run by ``scripts/train_feature_nets.py``, which writes the shipped weights and cards into
``brgm_pyro/priors/features/`` (read by :mod:`brgm_pyro.fmnist.networks`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from brgm_pyro.errors import InputError
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.fmnist.networks import ARCHITECTURES, METADATA_KEY, check_kind
from brgm_pyro.io import atomic_path, write_json

__all__ = ["train_feature_net"]


def _augment(images: torch.Tensor, low_resolution: bool, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips; with ``low_resolution``, an eighth of the images are also area-reduced
    by 2, 4 or 8 and enlarged back by pixel replication, as phi sees low-resolution observations."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if low_resolution:
        chosen = torch.rand(images.shape[0], generator=generator) < 0.125
        factors = torch.tensor([2, 4, 8])[torch.randint(0, 3, (images.shape[0],), generator=generator)]
        images = images.clone()
        for factor in (2, 4, 8):
            rows = chosen & (factors == factor)
            if rows.any():
                small = F.avg_pool2d(images[rows], factor)
                images[rows] = F.interpolate(small, scale_factor=factor, mode="nearest")
    return images


def _accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    with torch.no_grad():
        correct = sum(
            int((net(x).argmax(1) == y).sum())
            for x, y in zip(images.split(batch_size), labels.split(batch_size))
        )
    return correct / len(labels)


def train_feature_net(
    kind: str,
    epochs: int,
    seed: int,
    out_path: str | Path,
    batch_size: int = 256,
    lr: float = 3e-3,
    augment: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a :class:`PerceptNet` (``kind="percept"``) or :class:`EvalNet` (``"eval"``) classifier.

    Adam with a one-cycle learning-rate schedule (peak ``lr``) on the ``train`` split; the epoch of
    best ``val`` accuracy is kept; the ``test`` accuracy of that network is measured once, for the
    card. Augmentation: horizontal flips, and for "percept" also low-resolution copies (see
    :func:`_augment`). Writes ``out_path`` (safetensors) and the card ``out_path`` with suffix .json
    atomically, and returns the card: val / test accuracy, epochs, seed, seconds, parameter count.
    """
    check_kind(kind)
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    out_path = Path(out_path)
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_images, train_labels = load_fashion_mnist("train")
    val_images, val_labels = load_fashion_mnist("val")

    net = ARCHITECTURES[kind]()
    net.pixel_mean.fill_(float(train_images.mean()))
    net.pixel_std.fill_(float(train_images.std()))
    steps_per_epoch = math.ceil(len(train_labels) / batch_size)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch)
    history, best_accuracy, best_state = [], -1.0, None
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train_labels), generator=generator)
        batches = tqdm(
            order.split(batch_size), desc=f"{kind} epoch {epoch + 1}/{epochs}", disable=not progress
        )
        for rows in batches:
            images = train_images[rows]
            if augment:
                images = _augment(images, low_resolution=kind == "percept", generator=generator)
            loss = F.cross_entropy(net(images), train_labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            batches.set_postfix(loss=f"{loss.item():.3f}")
        val_accuracy = _accuracy(net, val_images, val_labels)
        history.append(val_accuracy)
        if val_accuracy > best_accuracy:
            best_accuracy, best_state = val_accuracy, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    test_images, test_labels = load_fashion_mnist("test")
    card = {
        "name": f"fmnist-{kind}",
        "architecture": type(net).__name__,
        "role": "perceptual feature network phi" if kind == "percept" else "evaluation network, metrics only",
        "data": "Fashion-MNIST padded to 32x32: trained on train (55,000), selected on val (5,000)",
        "val_accuracy": best_accuracy,
        "val_accuracy_per_epoch": history,
        "test_accuracy": _accuracy(net, test_images, test_labels),
        "epochs": epochs,
        "best_epoch": history.index(best_accuracy) + 1,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "augment": augment,
        "parameters": sum(p.numel() for p in net.parameters()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    tensors = {name: value.detach().contiguous() for name, value in net.state_dict().items()}
    metadata = {METADATA_KEY: json.dumps({"kind": kind, **card})}
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    write_json(out_path.with_suffix(".json"), card)
    return card
