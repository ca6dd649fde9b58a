"""``brgm info``: resolution, channels, num_ws, parameters and source format of a generator checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a generator checkpoint",
        description="Resolution, channels, num_ws, parameters and source format of a checkpoint or a prior "
        "name.",
    )
    parser.add_argument("checkpoint", metavar="NAME_OR_FILE",
                        help="registered prior name or checkpoint file (.safetensors, NVIDIA .pkl, rosinality .pt)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from brgm_pyro.checkpoints import load_generator, registered_priors, sniff_format
    from brgm_pyro.stylegan2 import describe

    G = load_generator(args.checkpoint)
    path = registered_priors().get(args.checkpoint, Path(args.checkpoint))
    summary = describe(G)
    summary["source_format"] = getattr(G, "source_format", None) or (
        sniff_format(path) if Path(path).exists() else "download"
    )
    recognised = (getattr(G, "info", None) or {}).get("recognised")
    if recognised:
        summary["recognised"] = recognised
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    return 0
