"""Speed of the Pyro MAP against a plain PyTorch loop computing the same objective.

Both optimise -log p(w, y) of the BRGM model (prior, colinearity, pixel and perceptual terms) with
the same generator G, corruption f, feature network phi, Adam and learning-rate schedule. The
runs alternate (Pyro, plain, Pyro, plain, ...) so that the machine's background load hits both
alike. Each engine runs 1 step and --steps steps; the difference of the medians gives the time per
step, and the rest is the one-off setup of a run (for Pyro: the guide traces the model once to learn
its latent sites: one forward pass of G and phi without gradients). Figures are ratios measured in one run.

    python benchmarks/speed.py [--steps 20] [--repeats 5] [--perceptual fmnist|none] [--device cpu]
    python benchmarks/speed.py --generator ffhq-1024 --perceptual lpips-random --batches 1 --steps 2 --repeats 1

``--generator ffhq-1024`` builds the 1024 px config-f generator (channel_base 32768, channel_max 512,
8 mapping layers, 18 ws) with random weights; ``lpips-random`` is LPIPS-VGG with a random backbone
(the same computation as the ImageNet one, which cannot be downloaded here).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from brgm_pyro.inference.map import MAPSchedule, lr_factor, run_map
from brgm_pyro.models import brgm

import brgm_pyro as bp
from brgm_pyro.perceptual import LPIPSVGG
from brgm_pyro.problem import frozen, prepare_problem
from brgm_pyro.stylegan2 import to_unit
from brgm_pyro.training.recipe import TrainConfig


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--perceptual", default="fmnist")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--generator", choices=["fmnist-32", "ffhq-1024"], default="fmnist-32")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.generator == "ffhq-1024":
        G = bp.StyleGAN2Generator(resolution=1024, channels=3, z_dim=512, w_dim=512, mapping_layers=8,
                                  channel_base=32768, channel_max=512, seed=0, compute_stats=False)
        G.compute_w_stats(num_samples=1000)
        G = G.to(args.device)
    else:
        G = bp.StyleGAN2Generator(**TrainConfig().generator_kwargs(), seed=0).to(args.device)
    perceptual = LPIPSVGG(pretrained_backbone=False) if args.perceptual == "lpips-random" else args.perceptual
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, generator {G.resolution} px, "
          f"{G.num_parameters() / 1e6:.2f} M parameters, perceptual {args.perceptual}")
    f = bp.forward.Downsample(4, "bicubic")
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the step time is the difference of runs of 1 and --steps steps)")
    per_step: dict[int, dict[str, float]] = {}
    with frozen(G):
        for batch in args.batches:
            x = G.sample(batch, seed=1).to(args.device)
            problem = prepare_problem(f(x).clamp(0, 1), f, G, brgm.BRGMParams(), perceptual)
            init = G.w_avg.expand(batch, G.num_ws, G.w_dim).clone()

            def pyro_run(steps, problem=problem, init=init):
                schedule = MAPSchedule(steps=steps, lr=0.05)
                return run_map(brgm.model, (), problem.model_kwargs(), init, schedule, progress=False)[0]["w"]

            def plain_run(steps, problem=problem, init=init):
                return plain_map(problem, init, MAPSchedule(steps=steps, lr=0.05))

            w_pyro, w_plain = pyro_run(args.steps), plain_run(args.steps)  # warm-up, and the two agree
            agree = (w_pyro - w_plain).abs().max().item()
            # A run of n steps costs setup + n * step; runs of 1 and of --steps steps give both.
            times: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.repeats):
                for name, run in (("pyro", pyro_run), ("plain", plain_run)):
                    for steps in (1, args.steps):
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()
                        start = time.perf_counter()
                        run(steps)
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()
                        times.setdefault((name, steps), []).append(time.perf_counter() - start)
            median = {key: statistics.median(v) for key, v in times.items()}
            per_step[batch] = {}
            for name in ("pyro", "plain"):
                step = (median[(name, args.steps)] - median[(name, 1)]) / (args.steps - 1)
                per_step[batch][name] = step
                per_step[batch][name + " setup"] = median[(name, 1)] - step
            pyro_s, plain_s = per_step[batch]["pyro"], per_step[batch]["plain"]
            print(f"batch {batch}: Pyro {pyro_s * 1e3:.1f} ms/step, plain PyTorch {plain_s * 1e3:.1f} ms/step, "
                  f"ratio {pyro_s / plain_s:.3f} (target <= 1.05); max |w_pyro - w_plain| = {agree:.2e}")
            print(f"  one-off setup per run: Pyro {per_step[batch]['pyro setup'] * 1e3:.1f} ms, "
                  f"plain {per_step[batch]['plain setup'] * 1e3:.1f} ms")
            if args.device.startswith("cuda"):
                print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
                torch.cuda.reset_peak_memory_stats()
    if 1 in per_step and 8 in per_step:
        speedup = (8 / per_step[8]["pyro"]) / (1 / per_step[1]["pyro"])
        print(f"images per second, batch 8 over batch 1 (Pyro): {speedup:.2f} (target >= 3)")


if __name__ == "__main__":
    main()
