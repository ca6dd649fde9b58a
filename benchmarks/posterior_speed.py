"""Time of a 16-draw SVI posterior for one 32 px image, and of the dense Hessian behind its default guide.

For one validation image (super-resolution x4 from 8x8, and inpainting of a 12 px centre box), on
the embedded prior with the card's settings and the reach term:

* the dense Hessian of the learned-noise model's potential (sigma_pixel integrated out) at the MAP
  (1,024 latents), by forward-over-reverse products
  (``dense_hessian(mode="forward")``, the default) and by backward-over-backward ones
  (``mode="reverse"``), alternating ``--repeats`` times so that the machine's load hits both alike;
  their ratio and their largest difference;
* ``sample_posterior(y, f, G, "svi", 16)`` end to end, MAP included, with the defaults (model
  ``"auto"``, here ``"reach"``) and the default guide (``"auto"``, here ``"laplace"``) and with
  ``guide="normal"``.

    python benchmarks/posterior_speed.py [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import brgm_pyro as bp
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.inference.laplace import dense_hessian, initialize_at
from brgm_pyro.models.variants import get_model
from brgm_pyro.problem import frozen, prepare_problem
from brgm_pyro.sampling import sample_posterior


def hessian_times(y, f, G, repeats: int, schedule: bp.MAPSchedule | None) -> dict[str, float]:
    model = get_model("learned-noise")
    rec = bp.reconstruct(y, f, G, model=model, schedule=schedule, progress=False)
    kwargs = prepare_problem(y, f, G, None, "auto").model_kwargs()
    with frozen(G):
        params, potential_fn, _ = initialize_at(model.collapsed.model, kwargs, {"w": rec.w.clone()})
        (name,) = params
        shape = params[name].shape
        z0 = params[name].reshape(-1)

        def fn(z: torch.Tensor) -> torch.Tensor:
            return potential_fn({name: z.reshape(shape)})

        times: dict[str, list[float]] = {"forward": [], "reverse": []}
        results = {}
        for _ in range(repeats):
            for mode in times:
                began = time.perf_counter()
                results[mode] = dense_hessian(fn, z0, mode=mode)
                times[mode].append(time.perf_counter() - began)
    scale = results["reverse"].abs().max()
    return {
        "latents": z0.numel(),
        "forward_s": statistics.median(times["forward"]),
        "reverse_s": statistics.median(times["reverse"]),
        "max_relative_difference": float((results["forward"] - results["reverse"]).abs().max() / scale),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--image", type=int, default=0, help="index into the validation split")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--map-steps", type=int, default=None, help="MAP steps (default: the prior's card)")
    parser.add_argument("--svi-steps", type=int, default=None, help="SVI steps (default: SVISettings')")
    args = parser.parse_args()
    schedule = bp.MAPSchedule(steps=args.map_steps) if args.map_steps else None
    svi = {"steps": args.svi_steps} if args.svi_steps else {}
    if args.threads:
        torch.set_num_threads(args.threads)
    G = bp.load_generator(args.generator)
    x = load_fashion_mnist("val", pad_to=G.resolution)[0][args.image : args.image + 1]
    tasks = {
        "super-resolution x4": bp.forward.Downsample(4, "bicubic"),
        "inpainting, centre box": bp.forward.Mask.center_box(G.resolution, 12),
    }
    print(f"generator {args.generator}, validation image {args.image}, torch threads {torch.get_num_threads()}")
    print("| task | Hessian forward-over-reverse | backward-over-backward | ratio | max rel. difference "
          "| SVI 16 draws, default guide | guide='normal' |")
    print("|---|---|---|---|---|---|---|")
    for task, f in tasks.items():
        y = f(x).clamp(0, 1)
        h = hessian_times(y, f, G, args.repeats, schedule)
        seconds = {}
        for guide in ("auto", "normal"):
            began = time.perf_counter()
            post = sample_posterior(y, f, G, "svi", 16, guide=guide, map_schedule=schedule, progress=False, **svi)
            seconds[guide] = time.perf_counter() - began
            if guide == "auto":
                chosen = post.settings["inference"]["guide"]
        print(f"| {task} | {h['forward_s']:.1f} s | {h['reverse_s']:.1f} s | {h['reverse_s'] / h['forward_s']:.2f}x | "
              f"{h['max_relative_difference']:.1e} | {seconds['auto']:.1f} s ({chosen}) | {seconds['normal']:.1f} s |")
    print("(SVI times are end to end: the MAP, the guide's fit, 16 draws and their images.)")


if __name__ == "__main__":
    main()
