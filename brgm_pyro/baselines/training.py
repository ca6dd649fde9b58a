"""Training of the supervised baselines on Fashion-MNIST pairs: L1 loss, Adam, a plateau schedule, resumable.

One run trains the network of one task (:data:`~brgm_pyro.baselines.supervised.TASKS`) on the train
split and selects it on the val split; the test split is never read. Pairs:

- super-resolution: y = Downsample(factor, "bicubic")(x) clamped to [0, 1], the same for train and val;
- inpainting: y = m * x with a fresh jittered mask of a random kind per image and epoch
  (:func:`~brgm_pyro.baselines.masks.random_masks`) for training, and the seven exact kinds in turn
  (:func:`~brgm_pyro.baselines.masks.cyclic_masks`, the evaluation's masks) for val.

Loss: L1 of the unclamped output (see :mod:`~brgm_pyro.baselines.networks`). Schedule: Adam at ``lr``; after every epoch the val L1 (fp32, all val images) feeds
``ReduceLROnPlateau`` (the rate times ``lr_factor`` after ``patience`` epochs without a relative
improvement of ``threshold``). The run has converged when the rate would be cut for the
``max_reductions + 1``-th time: the val L1 has stalled at the smallest rate. The kept weights are
those of the epoch with the lowest val L1. Training runs in bfloat16 autocast where the CPU
supports it (about twice as fast on one core); every reported figure is computed in float32.

The state is saved atomically after every epoch (``STATE_DIR/.supervised-TASK.state.pt``), so an
interrupted run resumes where it stopped (with another ``max_epochs`` if wanted: a lower limit stops
it there, a higher one continues a run the lower one stopped); the outputs (weights, card .json and .md, curves .csv) are
written atomically at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from brgm_pyro.baselines.bicubic import bicubic_upsample
from brgm_pyro.baselines.biharmonic import biharmonic
from brgm_pyro.baselines.masks import MASK_KINDS, cyclic_masks, random_masks
from brgm_pyro.baselines.supervised import IMAGE_SIZE, TASKS, build_network, save_network, task_corruption
from brgm_pyro.errors import InputError
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.forward import Mask
from brgm_pyro.io import PathLike, atomic_path, atomic_write_text, ensure_output_dir, write_json

__all__ = ["DEFAULT_CONFIGS", "Schedule", "machine", "train"]

# The architectures of the shipped networks (constructor arguments of build_network).
DEFAULT_CONFIGS = {
    "sr-x2": dict(features=48, blocks=6, min_features=32),
    "sr-x4": dict(features=64, blocks=8, min_features=32),
    "sr-x8": dict(features=64, blocks=8, min_features=32),
    "inpaint": dict(features=24, levels=3, blocks=1, max_features=96),
}
TRAIN_FIGURE_SIZE = 5000  # train images scored at the end, as many as the val split
EVAL_BATCH = 500


@dataclass
class Schedule:
    """Optimiser and stopping rule of a run (see the module docstring)."""

    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 80
    patience: int = 2
    lr_factor: float = 0.3
    max_reductions: int = 3
    threshold: float = 1e-3


def machine(threads: int) -> str:
    """The machine in words, e.g. '2-core x86-64 CPU (Intel(R) Xeon(R) Processor), torch 2.14.1, 1 thread'."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    arch = platform.machine().replace("_", "-")
    return f"{os.cpu_count()}-core {arch} CPU ({model}), torch {torch.__version__.split('+')[0]}, {threads} thread(s)"


def _inputs(task: str, x: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The network's inputs for clean images x: (y,) for super-resolution, (y, m) for inpainting.

    y is clamped to [0, 1], as every y the methods take is (bicubic downsampling overshoots a little).
    """
    if masks is None:
        return (task_corruption(task)(x).clamp(0, 1),)
    return (x * masks, masks)


def _score(network: torch.nn.Module, task: str, x: torch.Tensor, masks: torch.Tensor | None) -> dict:
    """Mean L1 and mean per-image PSNR (dB) of the network in float32 on clean images x."""
    network.eval()
    l1, psnr = [], []
    with torch.no_grad():
        for start in range(0, len(x), EVAL_BATCH):
            clean = x[start : start + EVAL_BATCH]
            batch_masks = None if masks is None else masks[start : start + EVAL_BATCH]
            out = network(*_inputs(task, clean, batch_masks))
            l1.append((out - clean).abs().flatten(1).mean(1))
            psnr.append(-10 * torch.log10((out - clean).square().flatten(1).mean(1)))
    network.train()
    return {"l1": float(torch.cat(l1).mean()), "psnr": float(torch.cat(psnr).mean())}


def _reference_score(task: str, x: torch.Tensor, masks: torch.Tensor | None) -> dict:
    """The same figures for the non-learned baseline of the task: bicubic, or biharmonic inpainting."""
    if masks is None:
        out = bicubic_upsample(_inputs(task, x, None)[0], x.shape[-2:]).clamp(0, 1)
    else:
        out = torch.cat([biharmonic(x[i : i + 1] * masks[i], Mask(masks[i])) for i in range(len(x))])
    error = out - x
    return {
        "method": "bicubic" if masks is None else "biharmonic",
        "l1": float(error.abs().flatten(1).mean(1).mean()),
        "psnr": float((-10 * torch.log10(error.square().flatten(1).mean(1))).mean()),
    }


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def _bf16_supported() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _settings(task: str, config: dict, schedule: Schedule, seed: int, train_size: int, val_size: int, bf16: bool):
    return {
        "task": task,
        "config": config,
        "schedule": dataclasses.asdict(schedule),
        "seed": seed,
        "train_size": train_size,
        "val_size": val_size,
        "bf16": bf16,
    }


def _trajectory(settings: dict) -> dict:
    """The settings that shape the run's trajectory: all but the epoch limit, which only cuts it short."""
    schedule = {name: value for name, value in settings["schedule"].items() if name != "max_epochs"}
    return {**settings, "schedule": schedule}


def _load_state(path: Path, settings: dict) -> dict | None:
    """The saved state of the run, if any, brought to the epoch limit of ``settings``.

    A run may be resumed with another epoch limit: stopped where the new limit falls, or continued
    when it was stopped by a lower one.
    """
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if _trajectory(state["settings"]) != _trajectory(settings):
        raise InputError(
            f"{path} holds a run with other settings ({state['settings']}); resume with the same settings "
            "or choose another --state-dir."
        )
    max_epochs = settings["schedule"]["max_epochs"]
    if state["stopped"] is None or state["stopped"].startswith("epoch limit"):
        state["stopped"] = f"epoch limit ({max_epochs})" if state["epoch"] >= max_epochs else None
    state["settings"] = settings
    return state


def _curves_csv(history: list[dict]) -> str:
    columns = ("epoch", "lr", "train_l1", "val_l1", "val_psnr", "seconds")
    lines = [",".join(columns)]
    for row in history:
        lines.append(",".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    return "\n".join(lines) + "\n"


def _card_markdown(card: dict) -> str:
    best = card["history"][card["best_epoch"] - 1]
    last = card["history"][-5:]
    tail = ", ".join(f"{row['val_l1']:.5f}" for row in last)
    reference = card["val_reference"]
    return "\n".join(
        [
            f"# Supervised baseline {card['task']}",
            "",
            f"- Trained on: {card['trained_on']}.",
            f"- Data: {card['data']}.",
            f"- Architecture: {card['architecture']} {json.dumps(card['config'])}, {card['parameters']:,} parameters.",
            f"- Loss and schedule: {card['loss']}; Adam lr {card['schedule']['lr']}, batch "
            f"{card['schedule']['batch_size']}, plateau schedule (factor {card['schedule']['lr_factor']}, patience "
            f"{card['schedule']['patience']}, {card['schedule']['max_reductions']} cuts); {card['precision']}.",
            f"- Stopped: {card['stopped']} after {card['epochs']} epochs; kept epoch {card['best_epoch']} "
            f"(lowest val L1).",
            f"- Training time: {card['seconds'] / 3600:.2f} h on {card['machine']}.",
            f"- Final figures (float32, kept weights): train L1 {card['train']['l1']:.5f}, PSNR "
            f"{card['train']['psnr']:.2f} dB ({card['train_figure_images']} train images); val L1 {card['val']['l1']:.5f}, "
            f"PSNR {card['val']['psnr']:.2f} dB ({card['val_size']} val images).",
            f"- {reference['method']} on the same val inputs: L1 {reference['l1']:.5f}, PSNR {reference['psnr']:.2f} dB.",
            f"- Val L1 of the last {len(last)} epochs: {tail} (kept epoch: {best['val_l1']:.5f}).",
            f"- Curves: `{card['curves']}` (train L1 is the running mean over each epoch's batches, in "
            f"{card['precision'].split(' ')[0]}).",
            "",
        ]
    )


def train(
    task: str,
    out_dir: PathLike,
    state_dir: PathLike | None = None,
    config: dict | None = None,
    schedule: Schedule | None = None,
    train_size: int | None = None,
    val_size: int | None = None,
    seed: int = 0,
    bf16: bool | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume) the network of ``task``; write ``out_dir/supervised-TASK.*``; return the card.

    Args:
        task: one of ``sr-x2``, ``sr-x4``, ``sr-x8``, ``inpaint``.
        out_dir: where the weights, the card (.json, .md) and the curves (.csv) are written.
        state_dir: where the resumable state is kept (default ``out_dir``).
        config: architecture (default :data:`DEFAULT_CONFIGS`).
        schedule: optimiser and stopping rule (default :class:`Schedule`).
        train_size, val_size: use only the first images of the splits (default: all).
        seed: seed of the initialisation, the batch order and the training masks.
        bf16: train in bfloat16 autocast (default: where the CPU supports it).
        progress: show a progress bar per epoch.
        log: receives one line per epoch.
    """
    if task not in TASKS:
        raise InputError(f"Unknown supervised task {task!r}; choose one of {', '.join(TASKS)}.")
    schedule = schedule or Schedule()
    config = dict(DEFAULT_CONFIGS[task] if config is None else config)
    bf16 = _bf16_supported() if bf16 is None else bf16
    out_dir = ensure_output_dir(out_dir)
    state_dir = ensure_output_dir(out_dir if state_dir is None else state_dir)
    state_path = state_dir / f".supervised-{task}.state.pt"

    train_x, _ = load_fashion_mnist("train", pad_to=IMAGE_SIZE)
    val_x, _ = load_fashion_mnist("val", pad_to=IMAGE_SIZE)
    train_x, val_x = train_x[:train_size], val_x[:val_size]
    settings = _settings(task, config, schedule, seed, len(train_x), len(val_x), bf16)
    inpainting = TASKS[task] is None
    val_masks = cyclic_masks(len(val_x), IMAGE_SIZE) if inpainting else None
    train_figure_x = train_x[:TRAIN_FIGURE_SIZE]
    train_figure_masks = cyclic_masks(len(train_figure_x), IMAGE_SIZE) if inpainting else None
    # Super-resolution inputs do not change between epochs: compute them once.
    train_y = None if inpainting else torch.cat([_inputs(task, chunk, None)[0] for chunk in train_x.split(5000)])

    torch.manual_seed(seed)
    network = build_network(task, **config).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=schedule.lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=schedule.lr_factor, patience=schedule.patience, threshold=schedule.threshold
    )
    state = _load_state(state_path, settings)
    if state is None:
        state = {
            "settings": settings,
            "epoch": 0,
            "history": [],
            "reductions": 0,
            "seconds": 0.0,
            "stopped": None,
            "best_epoch": 0,
            "best_weights": None,
            "val_reference": _reference_score(task, val_x, val_masks),
        }
    else:
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        plateau.load_state_dict(state["plateau"])
        log(f"{task}: resuming after epoch {state['epoch']} from {state_path}")

    while state["stopped"] is None:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(train_x), generator=generator)
        lr = optimizer.param_groups[0]["lr"]
        total, count = 0.0, 0
        batches = order.split(schedule.batch_size)
        for rows in tqdm(batches, desc=f"{task} epoch {epoch}", disable=not progress, leave=False):
            clean = train_x[rows].contiguous(memory_format=torch.channels_last)
            if inpainting:
                inputs = _inputs(task, clean, random_masks(len(rows), generator, IMAGE_SIZE))
            else:
                inputs = (train_y[rows],)
            with _autocast(bf16):
                out = network(*(i.contiguous(memory_format=torch.channels_last) for i in inputs), clamp=False)
            loss = F.l1_loss(out.float(), clean)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
        val = _score(network, task, val_x, val_masks)
        state["seconds"] += time.perf_counter() - started
        row = {"epoch": epoch, "lr": lr, "train_l1": total / count, "val_l1": val["l1"], "val_psnr": val["psnr"],
               "seconds": state["seconds"]}  # fmt: skip
        state["history"].append(row)
        if state["best_weights"] is None or val["l1"] < state["history"][state["best_epoch"] - 1]["val_l1"]:
            state["best_epoch"] = epoch
            state["best_weights"] = {k: v.detach().clone() for k, v in network.state_dict().items()}
        plateau.step(val["l1"])
        if optimizer.param_groups[0]["lr"] < lr:
            state["reductions"] += 1
        if state["reductions"] > schedule.max_reductions:
            state["stopped"] = "converged (val L1 stalled at the smallest learning rate)"
        elif epoch >= schedule.max_epochs:
            state["stopped"] = f"epoch limit ({schedule.max_epochs})"
        state.update(epoch=epoch, network=network.state_dict(), optimizer=optimizer.state_dict(),
                     plateau=plateau.state_dict())  # fmt: skip
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
        log(
            f"{task} epoch {epoch}: lr {lr:.2e}, train L1 {row['train_l1']:.5f}, val L1 {val['l1']:.5f}, "
            f"val PSNR {val['psnr']:.2f} dB, {state['seconds']:.0f} s"
        )

    network.load_state_dict(state["best_weights"])
    name = f"supervised-{task}"
    corruption = "masks of the seven kinds " + ", ".join(MASK_KINDS) + (
        ", each edge jittered by up to 4 pixels, a new mask per image and epoch (val: the exact kinds in turn)"
    ) if inpainting else f"Downsample({TASKS[task]}, 'bicubic') of the 32x32 images"
    card = {
        "name": name,
        "task": task,
        "trained_on": corruption,
        "data": f"Fashion-MNIST train split ({len(train_x):,} images, 28x28 padded to 32x32); selected on the val "
        f"split ({len(val_x):,} images); the test split was not used",
        "architecture": type(network).__name__,
        "config": config,
        "parameters": sum(p.numel() for p in network.parameters()),
        "loss": "L1 (mean absolute error over all pixels)",
        "schedule": dataclasses.asdict(schedule),
        "precision": "bfloat16 autocast training, float32 evaluation" if bf16 else "float32",
        "seed": seed,
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        "stopped": state["stopped"],
        "seconds": state["seconds"],
        "machine": machine(torch.get_num_threads()),
        "train": _score(network, task, train_figure_x, train_figure_masks),
        "train_figure_images": len(train_figure_x),
        "val": _score(network, task, val_x, val_masks),
        "val_size": len(val_x),
        "val_reference": state["val_reference"],
        "curves": f"{name}-curves.csv",
        "history": state["history"],
    }
    save_network(network.to(memory_format=torch.contiguous_format), task, out_dir / f"{name}.safetensors")
    atomic_write_text(out_dir / card["curves"], _curves_csv(state["history"]))
    write_json(out_dir / f"{name}.json", card)
    atomic_write_text(out_dir / f"{name}.md", _card_markdown(card))
    return card
