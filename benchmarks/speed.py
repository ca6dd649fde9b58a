"""Speed of the MAP and of the generator: Pyro against plain PyTorch, batch sizes, NVIDIA's network, the demo.

Sections (``--only`` picks some; all figures are medians of alternating repeats, and ratios are
measured within one run):

* ``map``: ms per MAP step of the Pyro MAP (``inference/map.py``: the recorded log density, the
  default, and the model run under Pyro at every step) against a plain PyTorch loop computing
  the same objective with the same G, f (bicubic x4), phi and Adam, on the embedded prior
  (``fashion-mnist-32``, its card's phi and settings, the shipped example images) and on the 256 px
  config-f architecture (random weights, LPIPS-VGG with a random backbone). Each run times every
  Adam step; the first three steps of a run are its setup (the guide's first trace, Pyro's
  validation, the recording), the later ones give the step time. Checks that the engines reach
  the same w.
* ``g``: forward + backward of the synthesis network alone (w -> image, gradient to w), images per
  second, page faults per step and peak memory, for the 32 px 64-channel architecture of
  ``brgm train-prior``, the embedded prior (96 channels) and 256 px config f. With
  ``--compare-nvidia DIR`` (a checkout of NVIDIA's stylegan2-ada-pytorch, never part of this
  project) the same rows for NVIDIA's network with the same weights, in both of its modes
  (``eval()``, as their projector runs it, with per-sample weights; ``train()`` with modulated
  activations), on its reference ops.
* ``reconstruct``: the whole warm ``bp.reconstruct`` call (the card's 150 steps, one image, the
  embedded prior) against 150 forward + backward passes of G, f and phi alone, and the FLOPs per
  step against the machine's FLOP rate (a 2048 x 2048 matmul).
* ``demo``: with ``--demo-against PYTHON``, ``brgm demo`` run by that interpreter (another checkout's
  environment) and by this one, alternately.

Each section and architecture runs in its own process, so that its peak memory and the heap of
the allocator (``brgm_pyro/allocator.py``) are its own. ``--compare-malloc`` repeats the ``g`` rows
with glibc's default allocator (``BRGM_MALLOC=system``).

    python benchmarks/speed.py [--threads 2] [--steps 20] [--repeats 5] [--only map g reconstruct]
    python benchmarks/speed.py --only g --compare-nvidia ~/src/stylegan2-ada-pytorch --compare-malloc
    python benchmarks/speed.py --only demo --demo-against ../main/.venv/bin/python
    python benchmarks/speed.py --tiny --steps 3 --repeats 1        # tiny generators: a smoke test
    python benchmarks/speed.py --device cuda --architectures 1024px-config-f --only map g --batches 1 8
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import brgm_pyro as bp
from brgm_pyro.demo import load_examples
from brgm_pyro.inference.map import MAPSchedule, lr_factor, run_map
from brgm_pyro.models import brgm
from brgm_pyro.perceptual import LPIPSVGG
from brgm_pyro.problem import frozen, prepare_problem
from brgm_pyro.stylegan2 import to_unit

SETUP_STEPS = 3  # the first steps of a MAP run: the guide's first trace, Pyro's validation, the recording
DEVICE = torch.device("cpu")  # the worker's device (--device)

# name -> (generator keyword arguments, weights); "embedded" is the shipped prior.
ARCHITECTURES = {
    "32px-64ch": dict(resolution=32, channels=1, z_dim=128, w_dim=128, mapping_layers=2, channel_base=2048,
                      channel_max=64),
    "32px-96ch": "fashion-mnist-32",
    "256px-config-f": dict(resolution=256, channels=3, z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768,
                           channel_max=512),
    "1024px-config-f": dict(resolution=1024, channels=3, z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768,
                            channel_max=512),
    "tiny": dict(resolution=16, channels=1, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16),
}


def generator(name: str) -> bp.StyleGAN2Generator:
    spec = ARCHITECTURES[name]
    if isinstance(spec, str):
        return bp.load_generator(spec).to(DEVICE)
    G = bp.StyleGAN2Generator(**spec, seed=0, compute_stats=False).to(DEVICE)
    G.compute_w_stats(num_samples=1000)
    with torch.no_grad():  # the trained values of the parameters that start at zero
        for param_name, p in G.named_parameters():
            if param_name.endswith("noise_strength") or (param_name.endswith(".bias") and ".affine" not in param_name
                                                         and "mapping" not in param_name):
                p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(param_name)))
    return G


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (5 min {five:.1f})"


def peak_memory() -> str:
    """The process's peak resident memory, and on a GPU its peak allocated memory."""
    text = f"peak memory of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    if DEVICE.type == "cuda":
        text += f", of the GPU {torch.cuda.max_memory_allocated(DEVICE) / 2**30:.2f} GiB"
    return text


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def matmul_gflops(repeats: int = 5, size: int = 2048) -> float:
    a, b = torch.randn(size, size, device=DEVICE), torch.randn(size, size, device=DEVICE)
    a @ b
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        a @ b
        synchronize()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


# ----------------------------------------------------------------------------- the MAP


def plain_map(problem, init_w: torch.Tensor, schedule: MAPSchedule) -> torch.Tensor:
    """The same MAP as ``run_map`` with ``brgm.model``, written as a plain PyTorch loop."""
    G, f, p = problem.generator, problem.forward, problem.params
    w = init_w.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=schedule.lr, betas=schedule.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, schedule))
    observed = problem.observed.expand_as(problem.y)
    log_norm_pixel = math.log(p.sigma_pixel) + 0.5 * math.log(2 * math.pi)
    for _ in range(schedule.steps):
        y_clean = f(to_unit(G.synthesis(w)))
        prior = 0.5 * ((w - G.w_avg) / G.w_std).square().sum() + w.numel() * (
            torch.log(G.w_std) + 0.5 * math.log(2 * math.pi)
        )
        unit = F.normalize(w, dim=-1)
        colinear = -p.kappa * ((unit @ unit.transpose(-1, -2)).sum() - G.num_ws * w.shape[0]) / 2
        pixel = ((0.5 * ((problem.y - y_clean) / p.sigma_pixel).square() + log_norm_pixel) * observed).sum()
        loss = prior + colinear + pixel
        if problem.perceptual is not None:
            feats = problem.perceptual(y_clean)
            loss = loss + 0.5 * ((problem.y_features - feats) / p.sigma_percept).square().sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return w.detach()


@contextlib.contextmanager
def adam_step_times() -> Iterator[list[float]]:
    """The time at the end of every ``torch.optim.Adam.step`` while the context is open (both engines use it)."""
    stamps: list[float] = []
    step = torch.optim.Adam.step

    def timed(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        synchronize()
        stamps.append(time.perf_counter())
        return out

    torch.optim.Adam.step = timed
    try:
        yield stamps
    finally:
        torch.optim.Adam.step = step


def timed_run(run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float, list[float]]:
    """w of a MAP run, the time to the end of its setup steps, and the time of each later step."""
    with adam_step_times() as stamps:
        start = time.perf_counter()
        w = run()
    return w, stamps[SETUP_STEPS - 1] - start, [b - a for a, b in itertools.pairwise(stamps[SETUP_STEPS - 1:])]


def map_problem(architecture: str, G: bp.StyleGAN2Generator, batch: int, tiny: bool):
    """The problem of a MAP row: y = f(x) for x the example images (embedded prior) or G's samples."""
    f = bp.forward.Downsample(4, "bicubic")
    if architecture == "32px-96ch":
        x = load_examples()[1].to(DEVICE)
        x = x[:batch] if batch <= len(x) else x.repeat(math.ceil(batch / len(x)), 1, 1, 1)[:batch]
        return prepare_problem(f(x).clamp(0, 1), f, G)
    x = G.sample(batch, seed=1)
    perceptual = None if tiny else LPIPSVGG(pretrained_backbone=False).to(DEVICE)
    return prepare_problem(f(x).clamp(0, 1), f, G, brgm.BRGMParams(), perceptual)


def map_rows(architecture: str, batches: list[int], steps: int, repeats: int, engines: list[str], tiny: bool) -> dict:
    # One generator for every batch: the rows run under frozen(G), and a second, unfrozen copy would
    # cost the gradients of all its weights.
    G = generator(architecture)
    problems = {batch: map_problem(architecture, G, batch, tiny) for batch in batches}
    lr = 0.1
    schedule = MAPSchedule(steps=SETUP_STEPS + steps, lr=lr)
    print(f"MAP, {architecture}: {G.resolution} px, {G.num_parameters() / 1e6:.2f} M parameters, "
          f"phi {type(problems[batches[0]].perceptual).__name__}, {steps} timed steps after {SETUP_STEPS} "
          f"setup steps, {repeats} repeats, torch threads {torch.get_num_threads()}, {load()}")

    def run(engine: str, batch: int) -> torch.Tensor:
        problem = problems[batch]
        init = G.w_avg.expand(batch, G.num_ws, G.w_dim).clone()
        if engine == "plain":
            return plain_map(problem, init, schedule)
        return run_map(brgm.model, (), problem.model_kwargs(), init, schedule, progress=False,
                       traced=engine == "pyro")[0]["w"]

    step_times: dict[tuple[str, int], list[float]] = {}
    setups: dict[tuple[str, int], list[float]] = {}
    final_w: dict[tuple[str, int], torch.Tensor] = {}
    with frozen(G):
        for _ in range(repeats):
            for batch in batches:
                for engine in engines:
                    w, setup, times = timed_run(lambda engine=engine, batch=batch: run(engine, batch))
                    final_w[engine, batch] = w
                    setups.setdefault((engine, batch), []).append(setup)
                    step_times.setdefault((engine, batch), []).extend(times)
    result = {"architecture": architecture, "batches": {}}
    for batch in batches:
        ms = {engine: statistics.median(step_times[engine, batch]) * 1e3 for engine in engines}
        setup_ms = {engine: statistics.median(setups[engine, batch]) * 1e3 for engine in engines}
        row = {"ms": ms, "images_per_second": {e: batch / ms[e] * 1e3 for e in engines}}
        for engine in (e for e in engines if e != "plain"):
            agree = (final_w[engine, batch] - final_w["plain", batch]).abs().max().item()
            row[engine + "/plain"] = ms[engine] / ms["plain"]
            row[engine + " agreement"] = agree
            label = "Pyro (recorded log density)" if engine == "pyro" else "Pyro (model run every step)"
            print(f"  batch {batch}: {label} {ms[engine]:.1f} ms/step, plain PyTorch {ms['plain']:.1f} ms/step, "
                  f"ratio {ms[engine] / ms['plain']:.3f}; max |w_pyro - w_plain| = {agree:.2e}")
        print("  one-off setup per run (first " + str(SETUP_STEPS) + " steps less their step time): "
              + ", ".join(f"{e} {setup_ms[e] - SETUP_STEPS * ms[e]:.0f} ms" for e in engines))
        result["batches"][batch] = row
    if len(batches) > 1:
        small, large = min(batches), max(batches)
        gain = {e: result["batches"][large]["images_per_second"][e] / result["batches"][small]["images_per_second"][e]
                for e in engines}
        result["throughput_gain"] = gain
        print(f"  images per second, batch {large} over batch {small}: "
              + ", ".join(f"{e} {g:.2f}x" for e, g in gain.items()))
    print(f"  {peak_memory()}, {load()}")
    return result


# ----------------------------------------------------------------------------- the generator alone


def nvidia_network(directory: str, G: bp.StyleGAN2Generator) -> torch.nn.Module:
    """NVIDIA's generator (training/networks.py of a stylegan2-ada-pytorch checkout) with G's architecture and weights."""
    sys.path.insert(0, str(Path(directory).resolve()))
    if importlib.util.find_spec("requests") is None:
        # dnnlib imports requests for its downloads, which this comparison never makes.
        sys.modules["requests"] = types.ModuleType("requests")
    from training.networks import Generator

    c = G.config
    net = Generator(
        z_dim=c["z_dim"], c_dim=0, w_dim=c["w_dim"], img_resolution=c["resolution"], img_channels=c["channels"],
        mapping_kwargs=dict(num_layers=c["mapping_layers"], lr_multiplier=c["mapping_lr_multiplier"]),
        synthesis_kwargs=dict(channel_base=c["channel_base"], channel_max=c["channel_max"], num_fp16_res=0,
                              conv_clamp=c["conv_clamp"]),
    )
    theirs = net.state_dict()
    ours = {k: v for k, v in G.state_dict().items() if k in theirs}
    left = set(theirs) - set(ours)
    if not all(k.endswith("resample_filter") for k in left):
        raise RuntimeError(f"NVIDIA's network has parameters that ours lacks: {sorted(left)[:5]}")
    net.load_state_dict(ours, strict=False)
    return net.requires_grad_(False).to(DEVICE)


def forward_backward(synthesis: Callable[[torch.Tensor], torch.Tensor], ws: torch.Tensor) -> None:
    synthesis(ws).square().sum().backward()


def g_rows(architecture: str, batches: list[int], repeats: int, nvidia: str | None) -> dict:
    G = generator(architecture).requires_grad_(False)
    networks: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"ours": G.synthesis}
    if nvidia:
        net = nvidia_network(nvidia, G)
        for mode in ("eval", "train"):
            def run(ws, net=net, mode=mode):
                net.train(mode == "train")
                return net.synthesis(ws, noise_mode="const", force_fp32=True)
            networks[f"NVIDIA {mode}()"] = run
    print(f"G forward + backward, {architecture}: {G.resolution} px, {G.channels} channel(s), "
          f"{G.num_parameters() / 1e6:.2f} M parameters, {repeats} repeats, torch threads {torch.get_num_threads()}, "
          f"allocator {'glibc default' if os.environ.get('BRGM_MALLOC') == 'system' else 'kept'}, {load()}")
    inputs = {b: torch.randn(b, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(b)).to(DEVICE)
              .requires_grad_(True) for b in batches}
    for name, synthesis in networks.items():
        if name != "ours":
            with torch.no_grad():
                ws = inputs[batches[0]]
                image = G.synthesis(ws)
                difference = (synthesis(ws) - image).abs().max().item()
            print(f"  {name}: max |image - ours| = {difference:.1e} (image values up to {image.abs().max().item():.1f})")
    calls = 10 if G.resolution <= 64 else 1
    times: dict[tuple[str, int], list[float]] = {}
    faults: dict[tuple[str, int], list[float]] = {}
    for synthesis in networks.values():  # warm-up
        for batch in batches:
            forward_backward(synthesis, inputs[batch])
    with FlopCounterMode(display=False) as counter:  # linear in the batch: counted on the smallest
        forward_backward(G.synthesis, inputs[min(batches)])
    flops_per_image = counter.get_total_flops() / min(batches)
    rate = matmul_gflops()
    print(f"  ours: {flops_per_image / 1e9:.2f} GFLOP per image (convolutions and matrix products, forward and "
          f"backward); a 2048 x 2048 matmul runs at {rate:.1f} GFLOP/s")
    for _ in range(repeats):
        for batch in batches:
            for name, synthesis in networks.items():
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                synchronize()
                start = time.perf_counter()
                for _ in range(calls):
                    forward_backward(synthesis, inputs[batch])
                synchronize()
                times.setdefault((name, batch), []).append((time.perf_counter() - start) / calls)
                faults.setdefault((name, batch), []).append(
                    (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls)
    result = {"architecture": architecture, "rows": {}, "gflop_per_image": flops_per_image / 1e9, "matmul_gflops": rate}
    for batch in batches:
        for name in networks:
            ms = statistics.median(times[name, batch]) * 1e3
            row = {"ms": ms, "images_per_second": batch / ms * 1e3,
                   "page_faults": statistics.median(faults[name, batch])}
            line = (f"  batch {batch}, {name}: {ms:.1f} ms, {row['images_per_second']:.1f} images/s, "
                    f"{row['page_faults']:.0f} page faults per pass")
            if name == "ours":
                row["gflops"] = flops_per_image * row["images_per_second"] / 1e9
                line += f", {row['gflops']:.1f} GFLOP/s ({row['gflops'] / rate:.0%} of the matmul's)"
            else:
                row["ours/theirs"] = result["rows"][f"ours b{batch}"]["ms"] / ms
                line += f"; ours / theirs {row['ours/theirs']:.3f}"
            result["rows"][f"{name} b{batch}"] = row
            print(line)
    if len(batches) > 1:
        small, large = min(batches), max(batches)
        for name in networks:
            gain = result["rows"][f"{name} b{large}"]["images_per_second"] / result["rows"][f"{name} b{small}"][
                "images_per_second"]
            result[f"throughput_gain {name}"] = gain
            print(f"  images per second, batch {large} over batch {small}, {name}: {gain:.2f}x")
    print(f"  {peak_memory()}, {load()}")
    return result


# ----------------------------------------------------------------------------- the whole reconstruction


def reconstruct_row(repeats: int, tiny: bool) -> dict:
    G = generator("tiny" if tiny else "32px-96ch")
    f = bp.forward.Downsample(4, "bicubic")
    truth = load_examples()[1][:1].to(DEVICE)
    if tiny:
        truth = F.interpolate(truth, size=G.resolution, mode="area")
    y = f(truth).clamp(0, 1)
    schedule = MAPSchedule(steps=3) if tiny else None
    problem = prepare_problem(y, f, G)
    steps = (schedule or problem.card.schedule).steps
    w = G.w_avg.expand(1, G.num_ws, G.w_dim).clone().requires_grad_(True)
    phi = problem.perceptual

    def forward_backward() -> None:
        y_clean = f(to_unit(G.synthesis(w)))
        (y_clean.sum() + (phi(y_clean).sum() if phi is not None else 0)).backward()

    def arithmetic() -> None:
        with frozen(G):
            for _ in range(steps):
                forward_backward()

    def whole() -> None:
        bp.reconstruct(y, f, G, schedule=schedule, progress=False)

    with frozen(G), FlopCounterMode(display=False) as counter:
        forward_backward()
    flops = counter.get_total_flops()
    rate = matmul_gflops()
    print(f"reconstruct: {steps} steps, one image, {'a tiny generator' if tiny else 'the embedded prior'} with phi "
          f"{type(phi).__name__}, "
          f"torch threads {torch.get_num_threads()}, {repeats} repeats, {load()}")
    times: dict[str, list[float]] = {}
    whole(), arithmetic()  # warm
    for _ in range(repeats):
        for name, run in (("reconstruct", whole), ("arithmetic", arithmetic)):
            synchronize()
            start = time.perf_counter()
            run()
            synchronize()
            times.setdefault(name, []).append(time.perf_counter() - start)
    seconds = {name: statistics.median(v) for name, v in times.items()}
    ratio = seconds["reconstruct"] / seconds["arithmetic"]
    achieved = flops * steps / seconds["arithmetic"] / 1e9
    print(f"  the warm bp.reconstruct call {seconds['reconstruct']:.2f} s, {steps} x forward + backward of G, f "
          f"and phi alone {seconds['arithmetic']:.2f} s: ratio {ratio:.3f}")
    print(f"  {flops / 1e9:.3f} GFLOP per step (convolutions and matrix products, forward and backward); "
          f"{achieved:.1f} GFLOP/s achieved against {rate:.1f} GFLOP/s of a 2048 x 2048 matmul "
          f"({achieved / rate:.0%}), {load()}")
    return {"seconds": seconds, "ratio": ratio, "gflop_per_step": flops / 1e9, "gflops": achieved,
            "matmul_gflops": rate}


# ----------------------------------------------------------------------------- the demo


def demo_rows(other_python: str, repeats: int) -> dict:
    interpreters = {"this checkout": sys.executable, "other": other_python}
    times: dict[str, list[float]] = {}
    tasks: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Run from an empty folder: Python puts the working directory first on the path, which would
        # make both interpreters import the brgm_pyro of the folder the benchmark was started in.
        for name, python in interpreters.items():
            where = subprocess.run([python, "-c", "import brgm_pyro; print(brgm_pyro.__file__)"], capture_output=True,
                                   text=True, check=True, cwd=tmp).stdout.strip()
            print(f"demo, {name}: {python} (brgm_pyro from {where})")
        for _ in range(repeats):
            for name, python in interpreters.items():
                out = Path(tmp) / name.replace(" ", "-")
                start = time.perf_counter()
                subprocess.run([python, "-m", "brgm_pyro.cli", "demo", "--out", str(out), "--force", "--quiet"],
                               check=True, capture_output=True, cwd=tmp)
                times.setdefault(name, []).append(time.perf_counter() - start)
                per_task = json.loads((out / "metrics.json").read_text())["seconds_per_task"]
                tasks.setdefault(name, []).append(sum(per_task.values()))
    seconds = {name: statistics.median(v) for name, v in times.items()}
    four = {name: statistics.median(v) for name, v in tasks.items()}
    speedup = four["other"] / four["this checkout"]
    for name in interpreters:
        print(f"  {name}: the four tasks {four[name]:.1f} s, the whole command {seconds[name]:.1f} s "
              f"(each run's four tasks {', '.join(f'{t:.1f}' for t in tasks[name])} s)")
    print(f"  the four tasks, other over this checkout: {speedup:.2f}x faster here, {load()}")
    return {"seconds": seconds, "four_tasks": four, "speedup": speedup}


# ----------------------------------------------------------------------------- driver


def worker(job: dict) -> dict:
    global DEVICE
    DEVICE = torch.device(job["device"])
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    if job["section"] == "map":
        return map_rows(job["architecture"], job["batches"], job["steps"], job["repeats"], job["engines"], job["tiny"])
    if job["section"] == "g":
        return g_rows(job["architecture"], job["batches"], job["repeats"], job["nvidia"])
    return reconstruct_row(job["repeats"], job["tiny"])


def run_worker(job: dict, environment: dict[str, str] | None = None) -> dict:
    """One section for one architecture in a fresh process; its lines are printed here."""
    process = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                             env={**os.environ, **(environment or {})})
    lines = process.stdout.splitlines()
    for line in lines:
        if not line.startswith("RESULT "):
            print(line)
    if process.returncode != 0:
        raise RuntimeError(f"the {job['section']} benchmark of {job.get('architecture')} failed:\n{process.stderr}")
    for line in process.stderr.splitlines():  # a MAP that fell back to the eager loop says so here
        if "Warning: " in line:
            print("  warning: " + line.split("Warning: ", 1)[1][:300])
    return json.loads(next(line for line in lines if line.startswith("RESULT "))[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=["map", "g", "reconstruct", "demo"],
                        default=["map", "g", "reconstruct"], help="sections to run (demo needs --demo-against)")
    parser.add_argument("--steps", type=int, default=20, help="timed MAP steps per run at 32 px")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats at 32 px")
    parser.add_argument("--large-steps", type=int, default=2, help="timed MAP steps per run at 256 px")
    parser.add_argument("--large-repeats", type=int, default=2, help="alternating repeats at 256 px")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device of the map, g and reconstruct sections")
    parser.add_argument("--compare-nvidia", metavar="DIR", help="a checkout of NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--compare-malloc", action="store_true", help="also run the g rows with glibc's default allocator")
    parser.add_argument("--demo-against", metavar="PYTHON", help="an interpreter whose brgm_pyro is the baseline")
    parser.add_argument("--demo-repeats", type=int, default=2)
    parser.add_argument("--architectures", nargs="+", choices=["32px-64ch", "32px-96ch", "256px-config-f",
                                                                "1024px-config-f"],
                        help="restrict the map and g sections to these (default: all)")
    parser.add_argument("--tiny", action="store_true", help="tiny random generators instead of the real ones")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))))
        return
    if args.steps < 2 or args.large_steps < 2:
        parser.error("--steps and --large-steps must be at least 2 (the step time is the median of a run's steps)")
    if "demo" in args.only and not args.demo_against:
        parser.error("the demo section compares with another checkout: pass --demo-against PYTHON")
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}, {load()}")
    chosen = args.architectures or ["32px-64ch", "32px-96ch", "256px-config-f"]
    small = ["tiny"] if args.tiny else [a for a in ("32px-96ch",) if a in chosen]
    large = [] if args.tiny else [a for a in ("256px-config-f", "1024px-config-f") if a in chosen]
    base = dict(threads=args.threads, batches=args.batches, tiny=args.tiny, nvidia=args.compare_nvidia,
                device=args.device)
    results: dict[str, dict] = {}
    if "map" in args.only:
        for architecture in small:
            results[f"map {architecture}"] = run_worker(dict(base, section="map", architecture=architecture,
                                                             steps=args.steps, repeats=args.repeats,
                                                             engines=["pyro", "pyro-eager", "plain"]))
        for architecture in large:
            results[f"map {architecture}"] = run_worker(dict(base, section="map", architecture=architecture,
                                                             steps=args.large_steps, repeats=args.large_repeats,
                                                             engines=["pyro", "plain"]))
    if "g" in args.only:
        g_architectures = small if args.tiny else [a for a in ("32px-64ch", "32px-96ch") if a in chosen]
        for allocator in ({}, {"BRGM_MALLOC": "system"}) if args.compare_malloc else ({},):
            for architecture in g_architectures + large:
                repeats = args.large_repeats if architecture in large else args.repeats
                job = dict(base, section="g", architecture=architecture, repeats=repeats)
                results[f"g {architecture} {allocator}"] = run_worker(job, allocator)
    if "reconstruct" in args.only:
        results["reconstruct"] = run_worker(dict(base, section="reconstruct", repeats=args.repeats))
    if "demo" in args.only:
        results["demo"] = demo_rows(args.demo_against, args.demo_repeats)
    print(f"done, {load()}")


if __name__ == "__main__":
    main()
