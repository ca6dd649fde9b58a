"""``brgm train-prior``: train a small StyleGAN2 prior on Fashion-MNIST, resumable from its run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from brgm_pyro.cli.choices import TRAIN_DEFAULTS
from brgm_pyro.cli.common import (
    add_device_option,
    add_seed_option,
    add_threads_option,
    check_output_dir,
    nonnegative_float,
    note,
    positive_float,
    positive_int,
    resolve_device,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-prior",
        help="train a small StyleGAN2 prior on Fashion-MNIST (resumable)",
        description="The StyleGAN2 recipe for small priors (brgm_pyro/training/recipe.py); the defaults are "
        "those of the embedded prior fashion-mnist-32. Re-running with the same --out resumes from its last "
        "checkpoint, with a note if the settings changed (another architecture is refused).",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="run folder (resumes if present)"
    )
    parser.add_argument(
        "--kimg", type=positive_float, default=1000.0, help="train until this many thousand images (default 1000)"
    )
    parser.add_argument("--checkpoint-kimg", type=positive_float, default=10.0,
                        help="save the training state and the generator every this many thousand images (default 10)")
    parser.add_argument("--snapshot-kimg", type=positive_float, default=50.0,
                        help="also keep generator-KIMG.safetensors every this many thousand images (default 50)")
    parser.add_argument("--max-minutes", type=positive_float, default=None, help="stop (after a checkpoint)")
    parser.add_argument("--batch-size", type=positive_int, default=TRAIN_DEFAULTS["batch_size"],
                        help=f"images per step (default {TRAIN_DEFAULTS['batch_size']})")
    parser.add_argument("--channel-base", type=positive_int, default=TRAIN_DEFAULTS["channel_base"],
                        help=f"G's and D's feature maps at resolution R: min(channel-base / R, channel-max) "
                        f"(default {TRAIN_DEFAULTS['channel_base']})")
    parser.add_argument("--channel-max", type=positive_int, default=TRAIN_DEFAULTS["channel_max"],
                        help=f"the most feature maps of a layer (default {TRAIN_DEFAULTS['channel_max']})")
    parser.add_argument("--r1-gamma", type=nonnegative_float, default=TRAIN_DEFAULTS["r1_gamma"],
                        help=f"R1 weight (default {TRAIN_DEFAULTS['r1_gamma']})")
    parser.add_argument(
        "--pl-weight",
        type=nonnegative_float,
        default=TRAIN_DEFAULTS["pl_weight"],
        help=f"path-length regularisation weight (default {TRAIN_DEFAULTS['pl_weight']:g}; 0: off)",
    )
    add_seed_option(parser, "the weights' initialisation and the order of the images (of a new run)")
    add_device_option(parser)
    add_threads_option(parser)
    parser.add_argument("--quiet", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the data set and the training code are only needed by this command.
    from brgm_pyro.fmnist.data import load_fashion_mnist
    from brgm_pyro.training.recipe import TrainConfig, train_prior

    check_output_dir(args.out)
    device = resolve_device(args.device)
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
        device=device,
        progress=not args.quiet,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
        note=lambda message: note(message, False),
    )
    print(
        f"brgm train-prior: {trainer.cur_nimg / 1000:.1f} kimg; "
        f"generator at {args.out / 'generator.safetensors'}"
    )
    return 0
