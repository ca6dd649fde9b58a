"""Training of the diffusion denoiser on Fashion-MNIST: EDM's loss and noise levels, Adam, an EMA, resumable.

The denoiser (:class:`~brgm_pyro.baselines.denoiser.Denoiser`) is trained on the train split (the
first 55,000 images, padded to 32x32, as the prior's data) and scored on the val split; the test
split is never read. One step (Karras et al. 2022, EDM, Sec. 5), in the centred range x' = 2 x - 1:

    sigma' = exp(p_mean + p_std n),  n ~ N(0, 1), one per image
    loss   = mean over images and pixels of  lambda(sigma') |D'(x' + sigma' e, sigma') - x'|^2,
    lambda(sigma') = (sigma'^2 + sigma_data^2) / (sigma' sigma_data)^2

(lambda makes the target of the network F unit-variance at every sigma). Adam at ``lr`` after a
linear warm-up; the weights used for sampling are an exponential moving average of the trained ones,
as in every diffusion model since DDPM, with decay min(``ema_decay``, (1 + s) / (10 + s)) at step s: a
run of a few thousand steps on a CPU would otherwise keep a good part of the random initial weights
in the average (0.999^2000 = 0.14).

Every ``eval_every`` steps the EMA weights are scored on the first ``eval_images`` val images with
noise and levels drawn once from a fixed seed (so the curve compares like with like), and the state
is saved atomically (``STATE_DIR/.diffusion-fmnist-32.state.pt``). A run stopped by ``max_minutes``
or killed resumes from its last save and follows the same trajectory: the batch order and the noise
of step s depend only on the seed and s. At the end (all ``steps`` done, or the time limit) the EMA
weights, the card (.json, .md) and the curves (.csv) are written atomically; the card's figures are
on all val images: the loss, and the denoising PSNR at fixed noise levels.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from brgm_pyro.baselines.denoiser import SIGMA_DATA, Denoiser, save_denoiser
from brgm_pyro.baselines.training import machine
from brgm_pyro.errors import InputError
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.io import PathLike, atomic_path, atomic_write_text, ensure_output_dir, write_json

__all__ = ["DEFAULT_CONFIG", "NAME", "PSNR_SIGMAS", "DiffusionSchedule", "train_denoiser"]

NAME = "diffusion-fmnist-32"
IMAGE_SIZE = 32
DEFAULT_CONFIG = dict(channels=[24, 48, 64], blocks=1, embedding=128)
PSNR_SIGMAS = (0.05, 0.1, 0.2, 0.4)
"""Noise levels (std, images in [0, 1]) at which the card gives the denoising PSNR."""
EVAL_BATCH = 250
EVAL_SEED = 12345


@dataclass
class DiffusionSchedule:
    """Optimiser, noise levels and bookkeeping of a run (see the module docstring)."""

    steps: int = 12_000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 500
    ema_decay: float = 0.999
    p_mean: float = -1.2
    p_std: float = 1.2
    eval_every: int = 500
    eval_images: int = 1000


def _edm_loss(denoiser: Denoiser, clean: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-image EDM loss of clean images (B, C, H, W) in [0, 1] at centred levels sigma (B,) with noise (B, C, H, W)."""
    centred = 2 * clean - 1
    weight = (sigma.square() + SIGMA_DATA**2) / (sigma * SIGMA_DATA).square()
    denoised = denoiser.preconditioned(centred + sigma[:, None, None, None] * noise, sigma)
    return weight * (denoised - centred).square().flatten(1).mean(1)


def _draw(generator: torch.Generator, count: int, schedule: DiffusionSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred noise levels (count,) from EDM's log-normal and unit noise (count, 1, H, W)."""
    sigma = (schedule.p_mean + schedule.p_std * torch.randn(count, generator=generator)).exp()
    return sigma, torch.randn(count, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def _val_loss(denoiser: Denoiser, images: torch.Tensor, schedule: DiffusionSchedule) -> float:
    """Mean EDM loss on ``images`` with levels and noise drawn from a fixed seed."""
    sigma, noise = _draw(torch.Generator().manual_seed(EVAL_SEED), len(images), schedule)
    with torch.no_grad():
        losses = [_edm_loss(denoiser, images[i : i + EVAL_BATCH], sigma[i : i + EVAL_BATCH], noise[i : i + EVAL_BATCH])
                  for i in range(0, len(images), EVAL_BATCH)]
    return float(torch.cat(losses).mean())


def _denoising_psnr(denoiser: Denoiser, images: torch.Tensor) -> dict[str, float]:
    """Mean per-image PSNR (dB) of D(x + sigma e, sigma), clamped to [0, 1], at each sigma of PSNR_SIGMAS."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    figures = {}
    with torch.no_grad():
        for sigma in PSNR_SIGMAS:
            psnr = []
            for i in range(0, len(images), EVAL_BATCH):
                clean = images[i : i + EVAL_BATCH]
                noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
                error = (denoiser(noisy, sigma).clamp(0, 1) - clean).square().flatten(1).mean(1)
                psnr.append(-10 * torch.log10(error))
            figures[str(sigma)] = float(torch.cat(psnr).mean())
    return figures


def _settings(config: dict, schedule: DiffusionSchedule, seed: int, train_size: int, val_size: int) -> dict:
    return {"config": config, "schedule": dataclasses.asdict(schedule), "seed": seed, "train_size": train_size,
            "val_size": val_size}


def _trajectory(settings: dict) -> dict:
    """The settings that shape the run: all but the step limit, which only cuts it short."""
    return {**settings, "schedule": {k: v for k, v in settings["schedule"].items() if k != "steps"}}


def _card_markdown(card: dict) -> str:
    schedule = card["schedule"]
    psnr = ", ".join(f"{value:.2f} dB at sigma {sigma}" for sigma, value in card["val"]["denoising_psnr"].items())
    last = card["history"][-5:]
    tail = ", ".join(f"{row['val_loss']:.4f} (step {row['step']})" for row in last)
    return "\n".join([
        f"# Diffusion denoiser {card['name']}",
        "",
        f"- What it is: {card['what']}.",
        f"- Data: {card['data']}.",
        f"- Architecture: {card['architecture']} {json.dumps(card['config'])}, {card['parameters']:,} parameters; "
        f"{card['preconditioning']}.",
        f"- Loss: {card['loss']}.",
        f"- Schedule: Adam lr {schedule['lr']} after {schedule['warmup']} warm-up steps, batch {schedule['batch_size']}, "
        f"EMA decay min({schedule['ema_decay']}, (1 + step) / (10 + step)); log sigma' ~ N({schedule['p_mean']}, {schedule['p_std']}^2); seed "
        f"{card['seed']}.",
        f"- Trained: {card['steps']:,} steps, {card['images_seen']:,} images ({card['epochs']:.1f} epochs); "
        f"stopped: {card['stopped']}.",
        f"- Training time: {card['seconds'] / 3600:.2f} h on {card['machine']}.",
        f"- Validation ({card['val']['images']:,} val images, EMA weights): loss {card['val']['loss']:.4f}; "
        f"denoising PSNR {psnr}.",
        f"- Val loss of the last {len(last)} evaluations ({schedule['eval_images']} val images): {tail}.",
        f"- Curves: `{card['curves']}` (train loss: mean over the steps since the previous evaluation).",
        "",
    ])


def _curves_csv(history: list[dict]) -> str:
    columns = ("step", "train_loss", "val_loss", "seconds")
    return "\n".join([",".join(columns)] + [",".join(f"{row[c]:.6g}" for c in columns) for row in history]) + "\n"


def train_denoiser(
    out_dir: PathLike,
    state_dir: PathLike | None = None,
    config: dict | None = None,
    schedule: DiffusionSchedule | None = None,
    train_size: int | None = None,
    val_size: int | None = None,
    seed: int = 0,
    max_minutes: float | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume) the denoiser; write ``out_dir/diffusion-fmnist-32.*``; return the card.

    Args:
        out_dir: where the weights, the card (.json, .md) and the curves (.csv) are written.
        state_dir: where the resumable state is kept (default ``out_dir``).
        config: architecture (default :data:`DEFAULT_CONFIG`).
        schedule: optimiser, noise levels and bookkeeping (default :class:`DiffusionSchedule`).
        train_size, val_size: use only the first images of the splits (default: all).
        seed: seed of the initialisation, the batch order and the noise.
        max_minutes: stop after this much wall time in this call (after a save; rerun to resume).
        progress: show a progress bar.
        log: receives one line per evaluation.
    """
    schedule = schedule or DiffusionSchedule()
    config = dict(DEFAULT_CONFIG if config is None else config)
    if schedule.steps < 1 or schedule.batch_size < 1 or schedule.eval_every < 1:
        raise InputError("steps, batch_size and eval_every must be positive; e.g. steps=12000, batch_size=64.")
    if max_minutes is not None and not max_minutes > 0:
        raise InputError(f"max_minutes must be a positive number of minutes, got {max_minutes}.")
    out_dir = ensure_output_dir(out_dir)
    state_dir = ensure_output_dir(out_dir if state_dir is None else state_dir)
    state_path = state_dir / f".{NAME}.state.pt"

    train_x, _ = load_fashion_mnist("train", pad_to=IMAGE_SIZE)
    val_x, _ = load_fashion_mnist("val", pad_to=IMAGE_SIZE)
    train_x, val_x = train_x[:train_size], val_x[:val_size]
    if len(train_x) < schedule.batch_size:
        raise InputError(f"The train images ({len(train_x)}) are fewer than one batch ({schedule.batch_size}).")
    curve_x = val_x[: schedule.eval_images]
    settings = _settings(config, schedule, seed, len(train_x), len(val_x))

    torch.manual_seed(seed)
    denoiser = Denoiser(**config)
    ema = Denoiser(**config)
    ema.load_state_dict(denoiser.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=schedule.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / schedule.warmup))
    state = {"settings": settings, "step": 0, "seconds": 0.0, "history": [], "stopped": None}
    if state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        if _trajectory(saved["settings"]) != _trajectory(settings):
            raise InputError(
                f"{state_path} holds a run with other settings ({saved['settings']}); resume with the same settings "
                "or choose another --state-dir."
            )
        denoiser.load_state_dict(saved["denoiser"])
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        warmup.load_state_dict(saved["warmup"])
        state.update(step=saved["step"], seconds=saved["seconds"], history=saved["history"])
        log(f"{NAME}: resuming after step {state['step']} from {state_path}")

    def save() -> None:
        with atomic_path(state_path) as tmp:
            torch.save({**state, "denoiser": denoiser.state_dict(), "ema": ema.state_dict(),
                        "optimizer": optimizer.state_dict(), "warmup": warmup.state_dict()}, tmp)

    steps_per_epoch = len(train_x) // schedule.batch_size
    wall_start = time.perf_counter()
    denoiser.train()
    running, count = 0.0, 0
    order, order_epoch = None, -1
    bar = tqdm(total=schedule.steps, initial=min(state["step"], schedule.steps), disable=not progress, unit="step")
    while state["step"] < schedule.steps:
        step = state["step"]
        started = time.perf_counter()
        epoch, position = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            order_epoch = epoch
        rows = order[position * schedule.batch_size : (position + 1) * schedule.batch_size]
        sigma, noise = _draw(torch.Generator().manual_seed(seed * 1_000_003 + step), len(rows), schedule)
        loss = _edm_loss(denoiser, train_x[rows], sigma, noise).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        warmup.step()
        decay = min(schedule.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, current in zip(ema.parameters(), denoiser.parameters()):
                average.lerp_(current, 1 - decay)
        running, count = running + loss.item(), count + 1
        state["step"] = step + 1
        state["seconds"] += time.perf_counter() - started
        bar.update(1)
        out_of_time = max_minutes is not None and time.perf_counter() - wall_start > 60 * max_minutes
        if state["step"] % schedule.eval_every == 0 or state["step"] == schedule.steps or out_of_time:
            if count:
                row = {"step": state["step"], "train_loss": running / count, "val_loss": _val_loss(ema, curve_x, schedule),
                       "seconds": state["seconds"]}  # fmt: skip
                state["history"].append(row)
                log(f"{NAME} step {row['step']}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
                    f"{row['seconds']:.0f} s")
                running, count = 0.0, 0
            save()
        if out_of_time:
            break
    bar.close()
    finished = state["step"] >= schedule.steps
    stopped = f"step limit ({schedule.steps})" if finished else (
        f"time limit of {max_minutes:g} minutes in the last call (resumable: rerun the same command)")
    if not state["history"]:
        save()
    ema.eval()
    card = {
        "name": NAME,
        "what": "a Gaussian denoiser D(x, sigma) for images in [0, 1], the prior of the dps and diffpir baselines",
        "data": f"Fashion-MNIST train split ({len(train_x):,} images, 28x28 padded to 32x32); scored on the val split "
        f"({len(val_x):,} images); the test split was not used",
        "architecture": "Denoiser(UNet)",
        "config": config,
        "parameters": sum(p.numel() for p in ema.parameters()),
        "preconditioning": f"EDM (Karras et al. 2022) in the centred range 2x - 1, sigma_data {SIGMA_DATA}",
        "loss": "EDM: lambda(sigma) |D(x + sigma e) - x|^2 in the centred range, lambda = (sigma^2 + sigma_data^2) / "
        "(sigma sigma_data)^2, mean over pixels",
        "schedule": dataclasses.asdict(schedule),
        "seed": seed,
        "steps": state["step"],
        "images_seen": state["step"] * schedule.batch_size,
        "epochs": state["step"] * schedule.batch_size / len(train_x),
        "stopped": stopped,
        "seconds": state["seconds"],
        "machine": machine(torch.get_num_threads()),
        "val": {"images": len(val_x), "loss": _val_loss(ema, val_x, schedule),
                "denoising_psnr": _denoising_psnr(ema, val_x)},
        "curves": f"{NAME}-curves.csv",
        "history": state["history"],
    }
    save_denoiser(ema, out_dir / f"{NAME}.safetensors", card={k: card[k] for k in ("name", "steps", "stopped")})
    atomic_write_text(out_dir / card["curves"], _curves_csv(state["history"]))
    write_json(out_dir / f"{NAME}.json", card)
    atomic_write_text(out_dir / f"{NAME}.md", _card_markdown(card))
    return card

