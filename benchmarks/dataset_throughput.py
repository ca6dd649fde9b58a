"""Images per second of a whole-folder reconstruction: 1 and 2 processes (torchrun, gloo) on this CPU, batch 1 and 8.

One run reconstructs the same folder of corrupted images (G's samples at 1/4 resolution) with
``brgm reconstruct-dataset`` into a new output folder per row: one plain process using every core,
one plain process of one thread, then torchrun with 2 processes of one thread each, at each batch
size; and on a CUDA machine one process on the GPU at batch 1, 8 and 32. The rate is images / (last image's record - the attempt's start, from the manifest): it leaves out
Python's start-up and the process group's set-up, which the "command s" column includes. The rows
alternate between the settings, round after round (``--repeats``, the median shown), so that the
machine's background load hits them alike; the load (``uptime``) before and after is printed with
the table.

    python benchmarks/dataset_throughput.py [--images 16] [--steps 20] [--batch-sizes 1 8] [--repeats 2]
    python benchmarks/dataset_throughput.py --generator G.safetensors --images 4 --steps 2 --perceptual none
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import brgm_pyro as bp
from brgm_pyro import io
from brgm_pyro.dataset.manifest import read_manifest

FACTOR = 4


def make_inputs(generator: str, folder: Path, num: int) -> None:
    G = bp.load_generator(generator)
    low = bp.forward.Downsample(FACTOR)(G.sample(num, seed=7)).clamp(0, 1)
    for i in range(num):
        io.write_image(folder / f"{i:04d}.png", low[i])


def images_per_second(out: Path) -> float:
    manifest = read_manifest(out)
    started = datetime.datetime.fromisoformat(manifest.attempts[-1]["started"])
    finished = max(datetime.datetime.fromisoformat(r["finished"]) for r in manifest.images.values())
    return len(manifest.images) / (finished - started).total_seconds()


def run_row(args: argparse.Namespace, inputs: Path, out: Path, processes: int, threads: int, batch: int,
            device: str) -> dict:
    cli = ["-m", "brgm_pyro.cli", "reconstruct-dataset", str(inputs), "--out", str(out), "--generator",
           args.generator, "--task", "superres", "--factor", str(FACTOR), "--steps", str(args.steps),
           "--batch-size", str(batch), "--perceptual", args.perceptual, "--device", device, "--quiet"]
    if processes == 1:
        command = [sys.executable, *cli]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *cli]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"row failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    return {"device": device, "processes": processes, "threads": threads, "batch": batch,
            "rate": images_per_second(out), "command_s": seconds}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="MAP steps per image")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the rows; the median rate is shown")
    parser.add_argument("--perceptual", default="auto", help="auto (the prior's card), none, or a name")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.images < 2 * max(args.batch_sizes):
        parser.error("--images must be at least twice the largest batch size, so that both processes get a batch")

    cores = os.cpu_count() or 1
    rows_to_run = [(1, cores, batch, "cpu") for batch in args.batch_sizes]
    rows_to_run += [(1, 1, batch, "cpu") for batch in args.batch_sizes]
    rows_to_run += [(2, 1, batch, "cpu") for batch in args.batch_sizes]
    if torch.cuda.is_available():
        rows_to_run += [(1, cores, batch, "cuda") for batch in (1, 8, 32)]
    load_before = uptime()
    with tempfile.TemporaryDirectory() as scratch:
        inputs = Path(scratch) / "inputs"
        inputs.mkdir()
        make_inputs(args.generator, inputs, args.images)
        # Interleaved: 1 process of every core, of one thread, then 2 processes, at each batch size in turn,
        # round after round.
        order = sorted(rows_to_run, key=lambda row: (row[3], row[2], row[0], -row[1]))
        runs = [
            run_row(args, inputs, Path(scratch) / f"out-{repeat}-{i}", *row)
            for repeat in range(args.repeats)
            for i, row in enumerate(order)
        ]
    rows = []
    for i in range(len(order)):
        same = runs[i :: len(order)]
        rows.append({**same[0], "rate": statistics.median(r["rate"] for r in same),
                     "command_s": statistics.median(r["command_s"] for r in same), "rates": [r["rate"] for r in same]})
    load_after = uptime()

    print(f"{args.images} images, {args.steps} MAP steps, generator {args.generator}, perceptual {args.perceptual}; "
          f"{cores}-core {platform.machine()} CPU, torch {torch.__version__}")
    print(f"load before: {load_before}\nload after:  {load_after}\n")
    print("| device | processes x threads | batch | images/s (median) | each round | command s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        each = ", ".join(f"{rate:.3f}" for rate in row["rates"])
        print(f"| {row['device']} | {row['processes']} x {row['threads']} | {row['batch']} | {row['rate']:.3f} | "
              f"{each} | {row['command_s']:.1f} |")
    rate = {(r["device"], r["processes"], r["threads"], r["batch"]): r["rate"] for r in rows}
    for batch in args.batch_sizes:
        two = rate["cpu", 2, 1, batch]
        print(f"batch {batch}: 2 processes x 1 thread / 1 process x {cores} threads = "
              f"{two / rate['cpu', 1, cores, batch]:.2f}; / 1 process x 1 thread = {two / rate['cpu', 1, 1, batch]:.2f}")
    if args.json:
        io.write_json(args.json, {"rows": rows, "load_before": load_before, "load_after": load_after})


if __name__ == "__main__":
    main()
