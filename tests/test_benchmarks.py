"""The speed benchmark with tiny settings: it runs, and the Pyro MAP and the plain PyTorch loop agree."""

import importlib.util
import re
import sys
from pathlib import Path


def test_speed_benchmark_runs_and_both_engines_agree(monkeypatch, capsys):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "speed.py"
    spec = importlib.util.spec_from_file_location("speed", path)
    speed = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "speed", speed)
    spec.loader.exec_module(speed)
    monkeypatch.setattr(sys, "argv", ["speed.py", "--steps", "3", "--repeats", "1", "--batches", "1", "2"])
    speed.main()
    printed = capsys.readouterr().out
    agreement = [float(v) for v in re.findall(r"max \|w_pyro - w_plain\| = ([0-9.e+-]+)", printed)]
    assert len(agreement) == 2 and max(agreement) < 1e-3, printed
    assert printed.count("one-off setup per run") == 2


def test_nuts_benchmark_reports_the_diagnostics(monkeypatch, capsys, tmp_path):
    """benchmarks/nuts.py on a tiny generator (random images standing in for the validation split):
    it runs the Laplace-preconditioned NUTS and prints and saves R-hat and ESS per monitored scalar."""
    import json

    import torch
    from conftest import tiny_generator

    import brgm_pyro as bp

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "nuts.py"
    spec = importlib.util.spec_from_file_location("nuts_benchmark", path)
    nuts = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "nuts_benchmark", nuts)
    spec.loader.exec_module(nuts)
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    bp.save_generator(G, tmp_path / "g.safetensors")
    monkeypatch.setattr(nuts, "load_fashion_mnist", lambda split: (torch.rand(3, 1, 16, 16), torch.zeros(3)))
    out = tmp_path / "nuts.json"
    argv = ["nuts.py", "--generator", str(tmp_path / "g.safetensors"), "--num-samples", "4", "--warmup", "4",
            "--max-tree-depth", "2", "--perceptual", "none", "--image", "1", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    nuts.main()
    printed = capsys.readouterr().out
    assert "model learned-noise" in printed and "| sigma_pixel[0] |" in printed and "max R-hat" in printed
    saved = json.loads(out.read_text())["diagnostics"]
    assert saved["precondition_s"] > 0 and saved["mean_tree_depth"] <= 2
    assert {"r_hat", "ess_bulk", "ess_bulk_per_s"} <= set(saved["monitored"]["sigma_pixel[0]"])
