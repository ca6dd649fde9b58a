"""``brgm train-prior``: train a small StyleGAN2 prior on Fashion-MNIST, resumable from its run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from brgm_pyro.cli.common import (
    check_output_dir,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-prior",
        help="train a small StyleGAN2 prior on Fashion-MNIST (resumable)",
        description="The StyleGAN2 recipe for small priors (brgm_pyro/training/recipe.py). Re-running with "
        "the same --out resumes from its last checkpoint.",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="run folder (resumes if present)"
    )
    parser.add_argument(
        "--kimg", type=positive_float, default=1000.0, help="train until this many thousand images"
    )
    parser.add_argument("--checkpoint-kimg", type=positive_float, default=10.0)
    parser.add_argument("--snapshot-kimg", type=positive_float, default=50.0)
    parser.add_argument("--max-minutes", type=positive_float, default=None, help="stop (after a checkpoint)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--channel-base", type=positive_int, default=2048)
    parser.add_argument("--channel-max", type=positive_int, default=64)
    parser.add_argument("--r1-gamma", type=nonnegative_float, default=0.1, help="R1 weight (default 0.1)")
    parser.add_argument(
        "--pl-weight",
        type=nonnegative_float,
        default=2.0,
        help="path-length regularisation weight (default 2; 0: off)",
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the data set and the training code are only needed by this command.
    from brgm_pyro.fmnist.data import load_fashion_mnist
    from brgm_pyro.training.recipe import TrainConfig, train_prior

    check_output_dir(args.out)
    config = TrainConfig(
        batch_size=args.batch_size,
        channel_base=args.channel_base,
        channel_max=args.channel_max,
        d_channel_base=args.channel_base,
        d_channel_max=args.channel_max,
        r1_gamma=args.r1_gamma,
        pl_weight=args.pl_weight,
        seed=args.seed,
    )
    images, _ = load_fashion_mnist("train")
    trainer = train_prior(
        images,
        args.out,
        kimg=args.kimg,
        config=config,
        checkpoint_kimg=args.checkpoint_kimg,
        snapshot_kimg=args.snapshot_kimg,
        device=args.device,
        progress=not args.quiet,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
    )
    print(
        f"brgm train-prior: {trainer.cur_nimg / 1000:.1f} kimg; "
        f"generator at {args.out / 'generator.safetensors'}"
    )
    return 0
