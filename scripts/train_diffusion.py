"""Train the diffusion denoiser of the dps and diffpir baselines on Fashion-MNIST and write it with its card.

    python scripts/train_diffusion.py                                  # into brgm_pyro/baselines/weights/
    python scripts/train_diffusion.py --max-minutes 170 --state-dir runs/   # stop after 170 min; rerun to resume
    python scripts/train_diffusion.py --steps 2 --eval-every 1 --train-size 64 --val-size 16 --batch-size 8 \\
        --channels 8,8,8 --out-dir /tmp/denoiser                         # a tiny run

Trained on the train split, scored on the val split (the test split is never read); see
brgm_pyro.baselines.diffusion_training for the loss and the schedule. The same command again resumes
from the state saved at the last evaluation (the batch order and the noise of each step depend only on
the seed and the step, so a resumed run follows the same trajectory). One CPU thread by default, so that
it can run beside other work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from brgm_pyro.baselines.denoiser import WEIGHTS_DIR
from brgm_pyro.baselines.diffusion_training import DEFAULT_CONFIG, DiffusionSchedule, train_denoiser


def channels(text: str) -> list[int]:
    """'24,48,64' -> [24, 48, 64]: three positive multiples of 8 (GroupNorm's eight groups)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers such as 24,48,64, got {text!r}") from None
    if len(values) != 3 or any(v < 8 or v % 8 for v in values):
        raise argparse.ArgumentTypeError(f"expected three multiples of 8 such as 24,48,64, got {text!r}")
    return values


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    schedule = DiffusionSchedule(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                                 eval_every=args.eval_every, eval_images=args.eval_images)
    config = dict(DEFAULT_CONFIG)
    if args.channels is not None:
        config["channels"] = args.channels
    card = train_denoiser(args.out_dir, state_dir=args.state_dir, config=config, schedule=schedule,
                          train_size=args.train_size, val_size=args.val_size, seed=args.seed,
                          max_minutes=args.max_minutes, progress=not args.quiet)
    print((Path(args.out_dir) / f"{card['name']}.md").read_text(), end="")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--state-dir", type=Path, default=None, help="where the resumable state is kept (default: --out-dir)")
    parser.add_argument("--steps", type=int, default=DiffusionSchedule.steps, help="optimiser steps in all")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop this call after so many minutes")
    parser.add_argument("--batch-size", type=int, default=DiffusionSchedule.batch_size)
    parser.add_argument("--lr", type=float, default=DiffusionSchedule.lr)
    parser.add_argument("--warmup", type=int, default=DiffusionSchedule.warmup)
    parser.add_argument("--eval-every", type=int, default=DiffusionSchedule.eval_every)
    parser.add_argument("--eval-images", type=int, default=DiffusionSchedule.eval_images)
    parser.add_argument("--channels", type=channels, default=None, help="feature maps per level, e.g. 24,48,64")
    parser.add_argument("--train-size", type=int, default=None, help="use only the first N train images")
    parser.add_argument("--val-size", type=int, default=None, help="use only the first N val images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="hide the progress bar")
    main(parser.parse_args())
