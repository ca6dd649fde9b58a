"""Copy a trained generator into the package as a registered prior, with its model card.

    python scripts/ship_prior.py runs/fashion-mnist-32/generator.safetensors \
        --name fashion-mnist-32 --quality quality.json --tuning tuning.json --hardware "2-core CPU"

The card (``brgm_pyro/priors/NAME.json``) records the data, images seen, hardware, training time,
the quality figures (``benchmarks/prior_quality.py --json``), the default reconstruction settings
(the best on the validation split, ``benchmarks/tune_defaults.py --json``) and a grid of 64
uncurated samples (``NAME-samples.png``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import brgm_pyro as bp
from brgm_pyro import io
from brgm_pyro.checkpoints import PRIORS_DIR


def model_card_markdown(card: dict) -> str:
    """The card as a short human-readable page."""
    lines = [
        f"# Model card: {card['name']}",
        "",
        f"- **Data**: {card['data']}.",
        f"- **Validation**: {card['validation']}.",
        f"- **Images seen**: {card.get('kimg')} thousand; **training time** "
        f"{(card.get('train_seconds') or 0) / 3600:.2f} h on {card['hardware']}.",
        f"- **Recipe**: {card['recipe']}.",
        f"- **Generator**: {json.dumps(card['generator'])}.",
        f"- **Default reconstruction settings**: params {json.dumps(card.get('params'))}, schedule "
        f"{json.dumps(card.get('schedule'))}, perceptual {card.get('perceptual')!r}."
        + (f" {card['schedule_note']}" if card.get("schedule_note") else ""),
        f"- **sigma_reach** (RMS residual of identity inversion on held-out validation images; the prior's "
        f"reach term in the posterior predictive, brgm_pyro.uncertainty.discrepancy): {card.get('sigma_reach')}.",
        "",
        f"![64 uncurated samples]({card['samples_grid']})",
        "",
    ]
    if card.get("quality"):
        lines += ["## Quality", "", "```json", json.dumps(card["quality"], indent=2), "```", ""]
    if card.get("tuning"):
        best = card["tuning"]["best"]
        lines += ["## Tuning on the validation split", "", f"Criterion: {card['tuning']['criterion']}.", "",
                  "```json", json.dumps(best, indent=2), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", default="fashion-mnist-32")
    parser.add_argument("--quality", type=Path, default=None, help="JSON from benchmarks/prior_quality.py")
    parser.add_argument("--tuning", type=Path, default=None, help="JSON from benchmarks/tune_defaults.py")
    parser.add_argument("--hardware", default="2-core CPU (no GPU)")
    parser.add_argument("--steps", type=int, default=None, help="override the default MAP steps of the card")
    parser.add_argument("--steps-note", default=None, help="why --steps differs from the tuning (required with it)")
    parser.add_argument("--priors-dir", type=Path, default=PRIORS_DIR,
                        help="the folder of registered priors to ship into (default: the package's)")
    args = parser.parse_args()
    if (args.steps is None) != (args.steps_note is None):
        parser.error("--steps and --steps-note go together: say on which images and by how much the steps were chosen")

    G = bp.load_generator(args.checkpoint)
    priors_dir = io.ensure_output_dir(args.priors_dir)
    target = priors_dir / f"{args.name}.safetensors"
    card_path = priors_dir / f"{args.name}.json"
    previous = json.loads(card_path.read_text()) if card_path.exists() else {}
    info = dict(G.info)
    card = {
        "name": args.name,
        "data": "Fashion-MNIST training split (first 55,000 of the official 60,000 training images; "
        "MIT licence), 28x28 zero-padded to 32x32, x-flips",
        "validation": "last 5,000 of the official training images (all settings tuned there)",
        "kimg": info.get("kimg"),
        "train_seconds": info.get("train_seconds"),
        "hardware": args.hardware,
        "recipe": "brgm_pyro/training/recipe.py (StyleGAN2: non-saturating logistic loss, lazy R1, "
        + ("lazy path-length regularisation, " if (info.get("train_config") or {}).get("pl_weight") else "")
        + "EMA, mapping lr multiplier 0.01, style mixing 0.9)",
        "train_config": info.get("train_config"),
        "generator": bp.stylegan2.describe(G),
        "perceptual": previous.get("perceptual", "fmnist"),
        "params": previous.get("params"),
        "schedule": previous.get("schedule", {}),
        "schedule_note": previous.get("schedule_note"),
        "sigma_reach": previous.get("sigma_reach"),
        "quality": previous.get("quality"),
        "tuning": previous.get("tuning"),
        "samples_grid": f"{args.name}-samples.png",
    }
    if args.quality:
        card["quality"] = json.loads(args.quality.read_text())
        # The prior's reach residual (brgm_pyro.uncertainty.discrepancy): RMS of identity inversion on held-out images.
        residual = card["quality"].get("inversion", {}).get("residual_rms")
        if residual:
            card["sigma_reach"] = residual
    if args.tuning:
        tuning = json.loads(args.tuning.read_text())
        card["tuning"] = tuning
        card["params"] = tuning["best"]["params"]
        card["perceptual"] = tuning["best"]["perceptual"]
        card["schedule"] = tuning["best"]["schedule"]
    if args.steps is not None:
        card["schedule"] = {**card["schedule"], "steps": args.steps}
        card["schedule_note"] = args.steps_note
    elif args.tuning:
        card.pop("schedule_note", None)  # a note on the previous tuning's steps says nothing of this one
    card = {k: v for k, v in card.items() if v is not None}
    bp.save_generator(G, target, info=info)
    samples = G.sample(64, seed=0)
    io.save_grid(priors_dir / card["samples_grid"], [list(samples[r * 8 : (r + 1) * 8]) for r in range(8)], scale=2)
    io.write_json(card_path, card)
    io.atomic_write_text(priors_dir / f"{args.name}.md", model_card_markdown(card))
    print(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB) and {card_path}")


if __name__ == "__main__":
    main()
