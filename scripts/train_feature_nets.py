"""Train the two shipped Fashion-MNIST feature networks and write them with their cards.

    python scripts/train_feature_nets.py                       # both, into brgm_pyro/priors/features/
    python scripts/train_feature_nets.py --kinds eval --epochs 3 --out-dir /tmp/nets

fmnist-percept (PerceptNet, seed 1) is the perceptual phi; fmnist-eval (EvalNet, seed 2) is used by
the metrics only. Each is trained on the train split, selected on val; the test accuracy is
measured once, for the card. One CPU thread by default, so that it can run beside other work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from brgm_pyro.fmnist import FEATURES_DIR
from brgm_pyro.io import ensure_output_dir
from brgm_pyro.training.feature_nets import train_feature_net

SEEDS = {"percept": 1, "eval": 2}


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out_dir = ensure_output_dir(args.out_dir)
    for kind in args.kinds:
        out_path = out_dir / f"fmnist-{kind}.safetensors"
        card = train_feature_net(
            kind, epochs=args.epochs, seed=SEEDS[kind], out_path=out_path, batch_size=args.batch_size,
            lr=args.lr, progress=not args.quiet,
        )  # fmt: skip
        per_epoch = ", ".join(f"{a:.4f}" for a in card["val_accuracy_per_epoch"])
        print(
            f"{card['name']}: {card['architecture']} with {card['parameters']} parameters, "
            f"seed {card['seed']}, {card['epochs']} epochs in {card['seconds']:.0f} s; "
            f"val accuracy per epoch {per_epoch}; kept epoch {card['best_epoch']}: "
            f"val {card['val_accuracy']:.4f}, test {card['test_accuracy']:.4f}; "
            f"{out_path} ({out_path.stat().st_size / 1e6:.2f} MB)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", nargs="+", choices=sorted(SEEDS), default=["percept", "eval"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=FEATURES_DIR)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    main(parser.parse_args())
