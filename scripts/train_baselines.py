"""Train the supervised baseline networks on Fashion-MNIST and write them with their cards and curves.

    python scripts/train_baselines.py                                # all four, into brgm_pyro/baselines/weights/
    python scripts/train_baselines.py --tasks sr-x8 --state-dir runs/  # one task, its resumable state in runs/
    python scripts/train_baselines.py --report                       # the table of the shipped cards
    python scripts/train_baselines.py --tasks inpaint --train-size 256 --val-size 64 --max-epochs 1 \\
        --features 8 --blocks 1 --out-dir /tmp/nets                 # a tiny run

Each network is trained on the train split and selected on the val split (the test split is never
read), until its val L1 stalls at the smallest learning rate (see brgm_pyro.baselines.training).
A rerun with the same arguments resumes from the state saved after the last finished epoch.
One CPU thread by default, so that it can run beside other work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from brgm_pyro.baselines.supervised import TASKS, WEIGHTS_DIR
from brgm_pyro.baselines.training import DEFAULT_CONFIGS, Schedule, train

# Architecture options of the command line -> the constructor argument they override.
ARCHITECTURE_OPTIONS = ("features", "blocks")


def report(cards: list[dict]) -> str:
    """A markdown table of the cards: size, training, final figures and how flat the val curve ends."""
    lines = [
        "| network | parameters | epochs (kept) | stopped | hours | train L1 / PSNR | val L1 / PSNR "
        "| classical val L1 / PSNR | val L1, last 5 epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for card in cards:
        reference = card["val_reference"]
        tail = " ".join(f"{row['val_l1']:.5f}" for row in card["history"][-5:])
        lines.append(
            f"| {card['name']} | {card['parameters']:,} | {card['epochs']} ({card['best_epoch']}) | {card['stopped']} "
            f"| {card['seconds'] / 3600:.2f} | {card['train']['l1']:.5f} / {card['train']['psnr']:.2f} dB "
            f"| {card['val']['l1']:.5f} / {card['val']['psnr']:.2f} dB "
            f"| {reference['method']} {reference['l1']:.5f} / {reference['psnr']:.2f} dB | {tail} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    schedule = Schedule(lr=args.lr, batch_size=args.batch_size, max_epochs=args.max_epochs, patience=args.patience)
    cards = []
    for task in args.tasks:
        if args.report:
            cards.append(json.loads((args.out_dir / f"supervised-{task}.json").read_text()))
            continue
        config = dict(DEFAULT_CONFIGS[task])
        config.update({name: getattr(args, name) for name in ARCHITECTURE_OPTIONS if getattr(args, name) is not None})
        cards.append(train(
            task, args.out_dir, state_dir=args.state_dir, config=config, schedule=schedule,
            train_size=args.train_size, val_size=args.val_size, seed=args.seed, progress=not args.quiet,
        ))  # fmt: skip
    print(report(cards))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--state-dir", type=Path, default=None, help="where the resumable state is kept (default: --out-dir)")
    parser.add_argument("--lr", type=float, default=Schedule.lr)
    parser.add_argument("--batch-size", type=int, default=Schedule.batch_size)
    parser.add_argument("--max-epochs", type=int, default=Schedule.max_epochs)
    parser.add_argument("--patience", type=int, default=Schedule.patience)
    parser.add_argument("--train-size", type=int, default=None, help="use only the first N train images")
    parser.add_argument("--val-size", type=int, default=None, help="use only the first N val images")
    parser.add_argument("--features", type=int, default=None, help="override the architecture's feature maps")
    parser.add_argument("--blocks", type=int, default=None, help="override the architecture's residual blocks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--report", action="store_true", help="only print the table of the cards in --out-dir")
    main(parser.parse_args())
