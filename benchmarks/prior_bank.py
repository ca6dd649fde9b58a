"""What the mode search's prior bank costs: building it, reading it, screening and ranking with it, at 32 px and 256 px.

    python benchmarks/prior_bank.py --draws 2048 --large-draws 64 --json bank.json

For the embedded 32 px prior: the build of ``--draws`` draws (seconds per 1,000 draws, extrapolated to
the default 65,536 and the file size), the first (checked) and a later read of the file, and for one
x4 image the two stages of ``search.candidates`` (the RSS screen of every draw, the model likelihood
of the 256 screened) and the refinement. For a 256 px StyleGAN2 config-f generator (random weights,
3 channels, z and w of 512, 8 mapping layers, channels 512 capped): the seconds per 1,000 draws of
the bank's 64 px image, which the skip architecture has drawn on its way up (blocks 4 to 64 only),
against the full 256 px synthesis a full-resolution bank would need, on ``--large-draws`` draws.
Threads: one (``torch.set_num_threads(1)``); the load of the machine is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import brgm_pyro as bp
from brgm_pyro import evaluation
from brgm_pyro.card import PriorCard
from brgm_pyro.forward import Downsample
from brgm_pyro.models.variants import get_model
from brgm_pyro.problem import frozen, prepare_problem
from brgm_pyro.search import SearchSettings, search_modes
from brgm_pyro.search import bank as bank_module
from brgm_pyro.search.bank import DEFAULT_SIZE, PriorBank, expected_bytes
from brgm_pyro.search.candidates import _rank, _screen


def _timed(fn):
    began = time.perf_counter()
    out = fn()
    return time.perf_counter() - began, out


def small_prior(args: argparse.Namespace, folder: Path) -> dict:
    G = bp.load_generator(args.generator)
    build, bank = _timed(lambda: PriorBank.load_or_build(G, args.draws, folder=folder))
    bank_module._CHECKED.clear()  # a new process's first read: the file is scanned
    first_read, _ = _timed(lambda: PriorBank.open(bank.path, G))
    later_read, _ = _timed(lambda: PriorBank.load_or_build(G, args.draws, folder=folder))
    x, _, _ = evaluation.split_images("val", [0], G.resolution)
    f = Downsample(4)
    problem = prepare_problem(f(x), f, G)
    spec = get_model(None)
    with frozen(G):
        screen, screened = _timed(lambda: _screen(bank, f, problem.y, problem.observed, 256))
        rank, _ = _timed(lambda: _rank(spec, problem, bank, screened))
        modes = search_modes(problem, spec, PriorCard.of(G).schedule, SearchSettings(bank_size=args.draws), bank=bank)
    per_thousand = build / args.draws * 1000
    return {
        "prior": args.generator, "draws": args.draws, "build_s": build, "build_s_per_1000": per_thousand,
        "build_s_default_size": per_thousand * DEFAULT_SIZE / 1000, "file_bytes": bank.bytes,
        "file_bytes_default_size": expected_bytes(G, DEFAULT_SIZE), "first_read_s": first_read,
        "later_read_s": later_read, "screen_s": screen, "screen_s_default_size": screen * DEFAULT_SIZE / args.draws,
        "rank_s": rank, "refine_s": modes.seconds["refine_s"],
    }


def large_prior(args: argparse.Namespace) -> dict:
    G = bp.StyleGAN2Generator(resolution=args.large_resolution, channels=3, z_dim=512, w_dim=512, mapping_layers=8,
                              channel_base=32768, channel_max=args.large_channel_max, seed=0,
                              compute_stats=False).requires_grad_(False)
    z = torch.randn(args.large_draws, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = torch.cat([G.mapping(chunk) for chunk in z.split(16)])
        low, _ = _timed(lambda: [G.synthesis(chunk, resolution=PriorBank.resolution_for(G)) for chunk in w.split(16)])
        full, _ = _timed(lambda: [G.synthesis(chunk) for chunk in w.split(16)])
    scale = 1000 / args.large_draws
    return {
        "prior": f"{args.large_resolution} px config-f (channels up to {args.large_channel_max}), random weights",
        "draws": args.large_draws, "bank_resolution": PriorBank.resolution_for(G),
        "bank_s_per_1000": low * scale, "full_resolution_s_per_1000": full * scale, "ratio_full_to_bank": full / low,
        "bank_s_default_size": low * scale * DEFAULT_SIZE / 1000, "file_bytes_default_size": expected_bytes(G, DEFAULT_SIZE),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--draws", type=int, default=2048, help="draws of the 32 px bank to build and time")
    parser.add_argument("--large-draws", type=int, default=64, help="draws of the 256 px generator to time")
    parser.add_argument("--large-resolution", type=int, default=256)
    parser.add_argument("--large-channel-max", type=int, default=512)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        small = small_prior(args, Path(folder))
    large = large_prior(args)
    load = os.getloadavg()
    print(f"one torch thread; load average {load[0]:.1f} on {os.cpu_count()} cores")
    for result in (small, large):
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))
    if args.json:
        args.json.write_text(json.dumps({"small": small, "large": large, "load": load}, indent=1))


if __name__ == "__main__":
    main()
