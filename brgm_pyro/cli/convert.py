"""``brgm convert``: a StyleGAN2 checkpoint (NVIDIA .pkl, TensorFlow .pkl, rosinality .pt) to .safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path

from brgm_pyro.errors import InputError
from brgm_pyro.output_lock import check_writable


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a StyleGAN2 checkpoint (NVIDIA .pkl, TensorFlow .pkl, rosinality .pt) to .safetensors",
        description="Reads the input with the restricted loader (no code in it runs) and writes the "
        "project's safetensors format, which never needs unpickling. A prior's card (its tuned settings, "
        "perceptual network and calibrations) goes into the file with it, so --generator OUTPUT runs with "
        "the same defaults as the prior's name.",
    )
    parser.add_argument("input", metavar="NAME_OR_FILE", help="checkpoint path or registered prior name")
    parser.add_argument("output", type=Path, help="output .safetensors file")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from brgm_pyro import io
    from brgm_pyro.checkpoints import load_generator, save_generator

    if args.output.suffix != ".safetensors":
        raise InputError(f"The output must end in .safetensors, got {args.output.name!r}; rename it.")
    io.check_not_input(args.output, [Path(args.input)])
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists; pass --force to replace it.")
    check_writable(args.output.parent, "output file")
    G = load_generator(args.input)
    info = {**(getattr(G, "info", None) or {}), "converted_from": str(args.input),
            "source_format": getattr(G, "source_format", None)}
    print(f"brgm convert: recognised {info.get('recognised') or info['source_format']}")
    save_generator(G, args.output, info=info)
    card = "with its card (tuned settings)" if getattr(G, "card", None) else "without a card (the library's defaults)"
    print(f"brgm convert: wrote {args.output} ({G.resolution} px, {G.channels} channel(s), {G.num_ws} ws), {card}")
    return 0
