"""StyleGAN2 training recipe for small priors (``brgm train-prior``).

The recipe of the StyleGAN2 paper (Karras et al., 2020), sized for 32 px priors on a CPU or one GPU:

* non-saturating logistic loss, ``L_G = softplus(-D(G(z)))``, ``L_D = softplus(D(G(z))) + softplus(-D(x))``;
* lazy R1 regularisation on reals every ``r1_interval`` D steps, weight ``r1_gamma / 2`` times the
  interval, with Adam's lr and betas adjusted by ``c = interval / (interval + 1)``;
* Adam (lr 0.0025, betas (0, 0.99)); the mapping network learns at 0.01 of that (its layers carry
  ``lr_multiplier = 0.01``);
* style mixing regularisation (two latents, random crossover point) with probability ``style_mixing``;
* random noise inputs during training (the saved generator uses its fixed noise buffers);
* an exponential moving average of G's weights (half-life ``ema_kimg`` thousand images, ramped up
  over the first images) which is the generator that gets exported;
* x-flip augmentation of the reals;
* lazy path-length regularisation of G every ``pl_interval`` G steps (StyleGAN2 paper, section 3.2):
  for w from the mapping network and y ~ N(0, I) / sqrt(H W) in image space, the length
  ``|J_w^T y|`` (J the Jacobian of the image with respect to w, averaged over the ``num_ws`` copies)
  is pulled towards ``a``, its exponential moving average (decay ``pl_decay``), with weight
  ``pl_weight`` times the interval, on ``batch_size / pl_batch_shrink`` latents; G's Adam lr and
  betas are adjusted by ``c = interval / (interval + 1)`` like D's for R1. It makes a fixed step in w
  change the image by a fixed amount everywhere in the latent space, so that G is smoother to
  invert, which is what BRGM does. ``pl_weight = 0`` turns it off (the recipe before path-length regularisation).

Training state (G, D, G_ema, both optimisers, the image counter and every random generator) is
checkpointed every ``checkpoint_kimg`` thousand images and resumes to the same state.
Everything here is plain PyTorch (no Pyro) and runs on CUDA when it is there.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from brgm_pyro.checkpoints import save_generator
from brgm_pyro.errors import InputError
from brgm_pyro.io import atomic_path
from brgm_pyro.output_lock import claim_output
from brgm_pyro.stylegan2 import StyleGAN2Generator
from brgm_pyro.training.discriminator import Discriminator

__all__ = ["TrainConfig", "Trainer", "train_prior"]


@dataclass
class TrainConfig:
    """Settings of a training run; saved with every checkpoint. The defaults are the embedded prior's
    (``fashion-mnist-32``: 96 channels per layer, batch 64)."""

    resolution: int = 32
    channels: int = 1
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 2
    channel_base: int = 2048
    channel_max: int = 96
    d_channel_base: int = 2048
    d_channel_max: int = 96
    batch_size: int = 64
    lr: float = 0.0025
    # StyleGAN2-ADA's heuristic 0.0002 * resolution^2 / batch_size = 0.0064 let the fashion-mnist-32
    # run collapse towards one class by 20 kimg (49% pullovers); 0.1 brought all classes back.
    r1_gamma: float = 0.1
    r1_interval: int = 16
    style_mixing: float = 0.9
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05
    xflip: bool = True
    seed: int = 0

    def generator_kwargs(self) -> dict[str, Any]:
        return dict(
            resolution=self.resolution,
            channels=self.channels,
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            mapping_layers=self.mapping_layers,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
        )


def _flag(field: str) -> str:
    """A setting of TrainConfig as ``brgm train-prior`` names it (its option, e.g. --batch-size)."""
    return "--" + field.replace("_", "-")


class Trainer:
    """Holds the networks, optimisers and counters of one run; ``step()`` is one G and one D update."""

    def __init__(self, images: torch.Tensor, config: TrainConfig, device: str | torch.device = "cpu") -> None:
        """images: (N, C, R, R) float in [0, 1], the training split."""
        if images.ndim != 4 or images.shape[1:] != (config.channels, config.resolution, config.resolution):
            raise InputError(
                f"Training images have shape {tuple(images.shape)}, but the config asks for "
                f"(N, {config.channels}, {config.resolution}, {config.resolution}); fix one of them."
            )
        self.config, self.device = config, torch.device(device)
        # On a GPU the whole split (60,000 x 32 x 32 floats, 245 MB) lives there: no copy per step.
        self.images = images.to(self.device) if self.device.type == "cuda" else images
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(config.seed)
        self.G = StyleGAN2Generator(**config.generator_kwargs(), seed=config.seed, compute_stats=False).to(device)
        self.D = Discriminator(
            config.resolution, config.channels, config.d_channel_base, config.d_channel_max
        ).to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G.train().requires_grad_(True)
        self.D.train().requires_grad_(True)
        self.opt_G = torch.optim.Adam(self.G.parameters(), eps=1e-8, **self.adam_settings("G"))
        self.opt_D = torch.optim.Adam(self.D.parameters(), eps=1e-8, **self.adam_settings("D"))
        self.pl_mean = torch.zeros([], device=self.device)
        self.data_gen = torch.Generator().manual_seed(config.seed + 1)
        self.order = torch.randperm(len(images), generator=self.data_gen)
        self.cursor = 0
        self.cur_nimg = 0
        self.step_index = 0
        self.seconds = 0.0

    def adam_settings(self, net: str) -> dict[str, Any]:
        """lr and betas of G's or D's Adam, adjusted for its lazy regulariser (if on)."""
        cfg = self.config
        interval, on = (cfg.pl_interval, cfg.pl_weight > 0) if net == "G" else (cfg.r1_interval, cfg.r1_gamma > 0)
        c = interval / (interval + 1) if on else 1.0
        return {"lr": cfg.lr * c, "betas": (0.0, 0.99**c)}

    # -- data ---------------------------------------------------------------------------------
    def next_reals(self) -> torch.Tensor:
        b = self.config.batch_size
        if self.cursor + b > len(self.order):
            self.order = torch.randperm(len(self.images), generator=self.data_gen)
            self.cursor = 0
        idx = self.order[self.cursor : self.cursor + b].to(self.images.device)
        self.cursor += b
        x = self.images[idx].to(self.device) * 2.0 - 1.0
        if self.config.xflip:
            flip = torch.rand(b, generator=self.data_gen) < 0.5
            x = torch.where(flip.to(self.device)[:, None, None, None], x.flip(3), x)
        return x

    # -- losses -------------------------------------------------------------------------------
    def latents(self, batch: int, update_w_avg: bool = False) -> torch.Tensor:
        """ws (batch, num_ws, w_dim) of z ~ N(0, I), with style mixing (a second z from a random
        crossover point on) with probability ``style_mixing``."""
        G, cfg = self.G, self.config
        z = torch.randn(batch, G.z_dim, device=self.device)
        ws = G.mapping(z, update_w_avg=update_w_avg)
        if cfg.style_mixing > 0 and torch.rand([]) < cfg.style_mixing:
            cutoff = int(torch.randint(1, G.num_ws, []))
            ws2 = G.mapping(torch.randn_like(z))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return ws

    def generate(self, batch: int, update_w_avg: bool = False) -> torch.Tensor:
        return self.G.synthesis(self.latents(batch, update_w_avg), noise_mode="random")

    def path_lengths(self, batch: int) -> torch.Tensor:
        """|J_w^T y| for ``batch`` latents w ~ mapping(z) (with style mixing) and y ~ N(0, I) / sqrt(H W):
        the root mean square over the num_ws copies of w of the gradient norms, differentiable."""
        ws = self.latents(batch)
        images = self.G.synthesis(ws, noise_mode="random")
        y = torch.randn_like(images) / (images.shape[2] * images.shape[3]) ** 0.5
        (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
        return grad.square().sum(dim=2).mean(dim=1).sqrt()

    def step(self) -> dict[str, torch.Tensor]:
        """One G and one D update; returns the losses as 0-d tensors (reading them would make a GPU wait)."""
        cfg = self.config
        start = time.perf_counter()
        # Generator: non-saturating logistic loss.
        self.D.requires_grad_(False)
        loss_G = F.softplus(-self.D(self.generate(cfg.batch_size, update_w_avg=True))).mean()
        stats = {"loss_G": loss_G.detach()}
        total_G = loss_G
        if cfg.pl_weight > 0 and self.step_index % cfg.pl_interval == 0:
            # Lazy path-length regularisation: (|J^T y| - a)^2, a the moving average of the lengths.
            lengths = self.path_lengths(max(cfg.batch_size // cfg.pl_batch_shrink, 1))
            self.pl_mean = self.pl_mean.lerp(lengths.mean().detach(), cfg.pl_decay)
            pl = (lengths - self.pl_mean).square().mean()
            total_G = total_G + pl * cfg.pl_weight * cfg.pl_interval
            stats.update(pl=pl.detach(), pl_mean=self.pl_mean.clone())
        self.opt_G.zero_grad(set_to_none=True)
        total_G.backward()
        self.opt_G.step()
        self.D.requires_grad_(True)

        # Discriminator: logistic loss, plus lazy R1 on reals.
        with torch.no_grad():
            fakes = self.generate(cfg.batch_size)
        reals = self.next_reals()
        do_r1 = cfg.r1_gamma > 0 and self.step_index % cfg.r1_interval == 0
        reals.requires_grad_(do_r1)
        logits_real = self.D(reals)
        loss_D = F.softplus(self.D(fakes)).mean() + F.softplus(-logits_real).mean()
        stats["loss_D"] = loss_D.detach()
        if do_r1:
            (grad,) = torch.autograd.grad(logits_real.sum(), reals, create_graph=True)
            r1 = grad.square().sum(dim=[1, 2, 3]).mean()
            loss_D = loss_D + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval
            stats["r1"] = r1.detach()
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()

        self.cur_nimg += cfg.batch_size
        self.step_index += 1
        self.update_ema()
        self.seconds += time.perf_counter() - start
        return stats

    @torch.no_grad()
    def update_ema(self) -> None:
        cfg = self.config
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup > 0:
            ema_nimg = min(ema_nimg, self.cur_nimg * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch_size / max(ema_nimg, 1e-8))
        # p_ema <- beta * p_ema + (1 - beta) * p, all parameters in one fused call.
        torch._foreach_lerp_(list(self.G_ema.parameters()), [p.detach() for p in self.G.parameters()], 1.0 - beta)
        torch._foreach_copy_(list(self.G_ema.buffers()), list(self.G.buffers()))

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": json.dumps(asdict(self.config)),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "cur_nimg": self.cur_nimg,
            "step_index": self.step_index,
            "seconds": self.seconds,
            "pl_mean": self.pl_mean.cpu(),
            "cursor": self.cursor,
            "order": self.order,
            "data_gen": self.data_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> TrainConfig:
        """Resume from ``state``; return the config it was saved with."""
        saved = TrainConfig(**json.loads(state["config"]))
        if saved.generator_kwargs() != self.config.generator_kwargs():
            differing = ", ".join(f"{_flag(key)} {value}, not {self.config.generator_kwargs()[key]}"
                                  for key, value in saved.generator_kwargs().items()
                                  if value != self.config.generator_kwargs()[key])
            raise InputError(
                f"The checkpoint was trained with another generator architecture ({differing}); resume with the "
                "checkpoint's architecture or start a new run folder."
            )
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        # Adam's state brings back the lr and betas it was saved with; this run's config decides them
        # (a run resumed with path-length regularisation switched on, say).
        for opt, net in ((self.opt_G, "G"), (self.opt_D, "D")):
            for group in opt.param_groups:
                group.update(self.adam_settings(net))
        self.pl_mean = state.get("pl_mean", torch.zeros([])).to(self.device)
        self.cur_nimg, self.step_index = int(state["cur_nimg"]), int(state["step_index"])
        self.seconds, self.cursor = float(state["seconds"]), int(state["cursor"])
        self.order = state["order"]
        self.data_gen.set_state(state["data_gen"])
        torch.set_rng_state(state["torch_rng"])
        return saved

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    def load(self, path: Path) -> TrainConfig:
        try:
            # Onto the CPU first: the random generator states must stay CPU tensors, and
            # load_state_dict below moves weights and optimiser moments to the run's device.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
            raise InputError(f"Cannot read the training checkpoint {path} ({err}); delete it to start over.") from None
        return self.load_state_dict(state)

    def export(self, path: Path, info: dict[str, Any] | None = None) -> Path:
        """Write G_ema, with w_avg/w_std computed, in the project format."""
        G = copy.deepcopy(self.G_ema).cpu()
        G.compute_w_stats()
        meta = {
            "kimg": self.cur_nimg / 1000,
            "train_seconds": round(self.seconds, 1),
            "train_config": asdict(self.config),
        }
        meta.update(info or {})
        return save_generator(G, path, info=meta)


def train_prior(
    images: torch.Tensor,
    out_dir: str | Path,
    kimg: float,
    config: TrainConfig | None = None,
    checkpoint_kimg: float = 10.0,
    snapshot_kimg: float = 50.0,
    device: str | torch.device | None = None,
    evaluate: Callable[[StyleGAN2Generator], dict[str, float]] | None = None,
    progress: bool = True,
    max_seconds: float | None = None,
    note: Callable[[str], None] | None = None,
) -> Trainer:
    """Train (or resume) a prior in ``out_dir`` until ``kimg`` thousand images have been shown.

    ``out_dir/training-state.pt`` is the resumable state, ``out_dir/generator.safetensors`` the
    exported EMA generator and ``out_dir/log.jsonl`` the losses and evaluation figures per
    checkpoint. ``evaluate(G_ema)`` (optional) returns quality figures logged at each checkpoint.
    ``max_seconds`` stops (after a checkpoint) once that much wall time has passed. Every
    ``snapshot_kimg`` the exported generator is also kept as ``generator-KIMG.safetensors`` so
    quality can be followed over the run. One run at a time trains in ``out_dir``
    (``brgm_pyro.output_lock``).

    A run resumed with settings other than those it was saved with (a larger batch on a GPU, say) goes
    on with the new ones: a change of the architecture is refused, any other change is passed to
    ``note`` in one line (default: a warning) and logged in ``log.jsonl``.
    """
    config = config or TrainConfig()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"The run folder {out_dir} is a file; give a folder path.")
    with claim_output(out_dir, "train-prior"):
        return _train(images, out_dir, kimg, config, checkpoint_kimg, snapshot_kimg, device, evaluate, progress,
                      max_seconds, note or warnings.warn)


def _changes(saved: TrainConfig, config: TrainConfig) -> dict[str, list[Any]]:
    """The settings that differ from those a run was saved with, as name -> [saved, now]. The seed is left out:
    a resumed run draws from the random state it saved."""
    now = asdict(config)
    return {key: [value, now[key]] for key, value in asdict(saved).items() if key != "seed" and value != now[key]}


def _train(images: torch.Tensor, out_dir: Path, kimg: float, config: TrainConfig, checkpoint_kimg: float,
           snapshot_kimg: float, device: str | torch.device, evaluate: Callable | None, progress: bool,
           max_seconds: float | None, note: Callable[[str], None]) -> Trainer:
    trainer = Trainer(images, config, device)
    state_path = out_dir / "training-state.pt"
    if state_path.exists():
        changes = _changes(trainer.load(state_path), config)
        if changes:
            listed = ", ".join(f"{_flag(key)} {old} -> {new}" for key, (old, new) in changes.items())
            message = (f"resuming {out_dir} at {trainer.cur_nimg / 1000:.1f} kimg with other settings than it was "
                       f"trained with so far ({listed}); the run goes on with the new ones.")
            note(message)
            with open(out_dir / "log.jsonl", "a") as log:
                log.write(json.dumps({"note": message, "changed": changes}) + "\n")
    target = int(kimg * 1000)
    every = max(int(checkpoint_kimg * 1000), config.batch_size)
    wall_start = time.time()
    bar = tqdm(total=target, initial=trainer.cur_nimg, unit="img", disable=not progress, smoothing=0.1)
    running: dict[str, torch.Tensor] = {}  # moving averages, read only at checkpoints
    while trainer.cur_nimg < target:
        stats = trainer.step()
        for k, v in stats.items():
            running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
        bar.update(config.batch_size)
        finished = trainer.cur_nimg >= target
        out_of_time = max_seconds is not None and time.time() - wall_start > max_seconds
        if trainer.cur_nimg % every < config.batch_size or finished or out_of_time:
            trainer.save(state_path)
            record: dict[str, Any] = {"kimg": trainer.cur_nimg / 1000, "seconds": round(trainer.seconds, 1)}
            record.update({k: round(float(v), 4) for k, v in running.items()})
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k in running}, refresh=False)
            exported = trainer.export(out_dir / "generator.safetensors")
            if trainer.cur_nimg % int(snapshot_kimg * 1000) < every or finished:
                snapshot = out_dir / f"generator-{trainer.cur_nimg // 1000:06d}.safetensors"
                snapshot.write_bytes(exported.read_bytes())
            if evaluate is not None:
                record.update(evaluate(trainer.G_ema))
            with open(out_dir / "log.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            bar.write(json.dumps(record))
        if out_of_time:
            break
    bar.close()
    return trainer
