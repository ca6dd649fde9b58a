"""The threads of a brgm command: the default against one thread and all cores, idle and under a competing load.

Each row times one whole command (Python's start-up included, as a user waits for it): ``brgm demo``
and a small ``brgm reconstruct-dataset`` (Fashion-MNIST test images at 1/4 resolution, x4
super-resolution), each with a few MAP steps so that a round stays short. The settings:

    default      no --threads: the policy of brgm_pyro.threads (every usable core, OpenMP threads sleeping
                 when out of work)
    one          --threads 1
    free         --threads <the usable cores less the other processes running when the row starts, at least 1>
                 (/proc/loadavg's runnable count): the cores that look free, with the default's wait policy
    all-spin     no --threads, OpenMP's own wait policy (GOMP_SPINCOUNT=300000, libgomp's default): every
                 core, spinning while it waits, as every command ran before brgm_pyro.threads

The machine may run other jobs: the "none added" rows are idle only if it is. "+N busy" rows run beside
``--burners`` processes that each keep one core busy (a Python loop), started before the command and
stopped after it. The rows alternate, round after round (``--repeats``, the median shown), so that the
machine's own background load hits them alike; the load average before and after, and the other
processes running at the start of each row (burners included), are printed with the table. The threads
a data-set run used are read from its record. A row that runs past ``--row-timeout`` is stopped and shown as
"> T" (its ratio a lower bound). Each row is printed as it finishes, then the table.

    python benchmarks/threads.py [--steps 40] [--images 12] [--repeats 2] [--burners 1] [--json out.json]
    python benchmarks/threads.py --generator G.safetensors --steps 1 --images 2 --repeats 1 --workloads dataset
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from brgm_pyro import threads

SETTINGS = ("default", "one", "free", "all-spin")
WORKLOADS = ("demo", "dataset")
FACTOR = 4
BURNER_START_S = 0.5  # for the burners to start before the row counts the running processes
# The variables that would override a row's setting, cleared from every row's environment.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", threads.ENV)


def make_inputs(folder: Path, num: int, generator: str) -> None:
    """``num`` corrupted inputs: Fashion-MNIST test images (or, for a generator file, its samples) at 1/4 size."""
    import torch

    import brgm_pyro as bp
    from brgm_pyro import io
    from brgm_pyro.fmnist.data import load_fashion_mnist

    if generator == "fashion-mnist-32":
        clean = load_fashion_mnist("test", pad_to=32)[0][:num]
    else:
        with torch.no_grad():
            clean = bp.load_generator(generator).sample(num, seed=7)
    low = bp.forward.Downsample(FACTOR)(clean).clamp(0, 1)
    folder.mkdir(parents=True)
    for i in range(num):
        io.write_image(folder / f"{i:04d}.png", low[i])


def other_running() -> int:
    """The other processes running or ready to run now: /proc/loadavg's runnable count, less this one."""
    return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1


def command(workload: str, setting: str, args: argparse.Namespace, inputs: Path, out: Path,
            running: int) -> tuple[list[str], dict]:
    """The command line and environment of one row, ``running`` other processes running as it starts."""
    cli = [sys.executable, "-m", "brgm_pyro.cli"]
    if workload == "demo":
        cli += ["demo", "--out", str(out), "--generator", args.generator, "--steps", str(args.steps), "--quiet"]
    else:
        cli += ["reconstruct-dataset", str(inputs), "--out", str(out), "--generator", args.generator, "--task",
                "superres", "--factor", str(FACTOR), "--steps", str(args.steps), "--quiet"]
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    if setting == "one":
        cli += ["--threads", "1"]
    elif setting == "free":
        cli += ["--threads", str(max(1, threads.usable_cores() - running))]
    if setting == "all-spin":
        env["GOMP_SPINCOUNT"] = "300000"
    return cli, env


def run_row(workload: str, setting: str, busy: bool, args: argparse.Namespace, inputs: Path, out: Path) -> dict:
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burners if busy else 0)]
    stopped = False
    try:
        time.sleep(BURNER_START_S if burners else 0)
        running = other_running()
        cli, env = command(workload, setting, args, inputs, out, running)
        began = time.perf_counter()
        try:
            done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=args.row_timeout)
        except subprocess.TimeoutExpired:
            stopped = True
        seconds = time.perf_counter() - began
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    if not stopped and done.returncode != 0:
        raise SystemExit(f"row failed ({' '.join(cli)}):\n{done.stderr[-3000:]}")
    used = None
    if workload == "dataset" and not stopped:
        attempts = [json.loads(line) for path in sorted((out / "manifest").glob("*.jsonl"))
                    for line in path.read_text().splitlines() if '"attempt"' in line]
        used = next(record["threads"] for record in attempts if record.get("type") == "attempt")
    row = {"workload": workload, "setting": setting, "busy": busy, "seconds": seconds, "stopped": stopped,
           "threads": used, "running_before": running}
    print(f"row: {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--steps", type=int, default=40, help="MAP steps of every reconstruction")
    parser.add_argument("--images", type=int, default=12, help="images of the data-set run")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the rows; the median is shown")
    parser.add_argument("--burners", type=int, default=1,
                        help="processes that keep a core busy in the busy rows (0: no busy rows)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="demo, dataset or both")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"some of {', '.join(SETTINGS)}")
    parser.add_argument("--row-timeout", type=float, default=1800, help="stop a row after this many seconds")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    workloads, settings = args.workloads.split(","), args.settings.split(",")
    if not set(workloads) <= set(WORKLOADS) or not set(settings) <= set(SETTINGS):
        parser.error(f"--workloads takes {', '.join(WORKLOADS)}; --settings takes {', '.join(SETTINGS)}")

    loads = (False, True) if args.burners else (False,)
    rows = [(workload, setting, busy) for busy in loads for workload in workloads for setting in settings]
    load_before = Path("/proc/loadavg").read_text().strip()
    with tempfile.TemporaryDirectory() as scratch:
        inputs = Path(scratch) / "inputs"
        if "dataset" in workloads:
            make_inputs(inputs, args.images, args.generator)
        runs = [run_row(*row, args, inputs, Path(scratch) / f"out-{repeat}-{i}")
                for repeat in range(args.repeats) for i, row in enumerate(rows)]
    load_after = Path("/proc/loadavg").read_text().strip()

    table = []
    for i, (workload, setting, busy) in enumerate(rows):
        same = runs[i :: len(rows)]
        table.append({"workload": workload, "setting": setting, "busy": busy,
                      "seconds": statistics.median(r["seconds"] for r in same),
                      "stopped": any(r["stopped"] for r in same),
                      "each": [f"{'> ' if r['stopped'] else ''}{r['seconds']:.1f}" for r in same],
                      "threads": [r["threads"] for r in same], "running_before": [r["running_before"] for r in same]})
    one = {(r["workload"], r["busy"]): r["seconds"] for r in table if r["setting"] == "one"}

    print(f"{platform.machine()} CPU, {threads.usable_cores()} usable core(s), {os.cpu_count()} online; "
          f"generator {args.generator}, {args.steps} MAP steps; data set of {args.images} images; "
          f"busy: {args.burners} burner process(es); {args.repeats} round(s)")
    print(f"/proc/loadavg before: {load_before}\n/proc/loadavg after:  {load_after}\n")
    print("| workload | load | setting | seconds (median) | each round | / one thread | threads used | "
          "other processes running at the start |")
    print("|---|---|---|---|---|---|---|---|")
    for row in table:
        ratio = row["seconds"] / one[row["workload"], row["busy"]] if (row["workload"], row["busy"]) in one else None
        used = ", ".join("-" if t is None else str(t) for t in row["threads"])
        load = f"+{args.burners} busy" if row["busy"] else "none added"
        over = "> " if row["stopped"] else ""
        print(f"| {row['workload']} | {load} | {row['setting']} | {over}{row['seconds']:.1f} | "
              f"{', '.join(row['each'])} | {'-' if ratio is None else f'{over}{ratio:.2f}'} | {used} | "
              f"{', '.join(map(str, row['running_before']))} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": table, "runs": runs, "load_before": load_before,
                                         "load_after": load_after}, indent=1))


if __name__ == "__main__":
    main()
