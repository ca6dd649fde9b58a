"""``brgm convert``: a StyleGAN2 checkpoint (NVIDIA .pkl, TensorFlow .pkl, rosinality .pt) to .safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path

from brgm_pyro import io
from brgm_pyro.checkpoints import load_generator, save_generator
from brgm_pyro.cli.common import check_output_dir
from brgm_pyro.errors import InputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a StyleGAN2 checkpoint (NVIDIA .pkl, TensorFlow .pkl, rosinality .pt) to .safetensors",
        description="Reads the input with the restricted loader (no code in it runs) and writes the "
        "project's safetensors format, which never needs unpickling.",
    )
    parser.add_argument("input", help="checkpoint path or public prior name")
    parser.add_argument("output", type=Path, help="output .safetensors file")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output.suffix != ".safetensors":
        raise InputError(f"The output must end in .safetensors, got {args.output.name!r}; rename it.")
    check_output_dir(args.output.parent if str(args.output.parent) else Path("."))
    io.check_not_input(args.output, [Path(args.input)])
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists; pass --force to replace it.")
    G = load_generator(args.input)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    info = {**(getattr(G, "info", None) or {}), "converted_from": str(args.input),
            "source_format": getattr(G, "source_format", None)}
    print(f"brgm convert: recognised {info.get('recognised') or info['source_format']}")
    save_generator(G, args.output, info=info)
    print(f"brgm convert: wrote {args.output} ({G.resolution} px, {G.channels} channel(s), {G.num_ws} ws)")
    return 0
