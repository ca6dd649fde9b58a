"""The benchmarks with tiny settings: they run, and what they compare agrees (the Pyro MAP and the plain
PyTorch loop; the two ways to the dense Hessian)."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest


def _load(name: str, monkeypatch):
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, f"{name}_benchmark", module)
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_runs_and_both_engines_agree(monkeypatch, capsys):
    speed = _load("speed", monkeypatch)
    monkeypatch.setattr(sys, "argv", ["speed.py", "--steps", "3", "--repeats", "1", "--batches", "1", "2"])
    speed.main()
    printed = capsys.readouterr().out
    agreement = [float(v) for v in re.findall(r"max \|w_pyro - w_plain\| = ([0-9.e+-]+)", printed)]
    assert len(agreement) == 2 and max(agreement) < 1e-3, printed
    assert printed.count("one-off setup per run") == 2


def test_posterior_speed_benchmark_times_both_hessians_and_the_svi_posterior(monkeypatch, capsys, tmp_path):
    import torch
    from conftest import tiny_generator

    import brgm_pyro as bp

    bench = _load("posterior_speed", monkeypatch)
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    path = str(bp.save_generator(G, tmp_path / "g.safetensors"))
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(bench, "load_fashion_mnist", lambda split, pad_to: (images, torch.zeros(2)))
    argv = ["posterior_speed.py", "--generator", path, "--repeats", "1", "--map-steps", "3", "--svi-steps", "3"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| super", "| inpaint"))]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[4]) < 1e-4, row  # both modes give the same Hessian
        assert cells[5].endswith("(laplace)"), row


@pytest.fixture
def nuts_benchmark(monkeypatch, tmp_path):
    """benchmarks/nuts.py as a module, with a tiny saved generator (its path is ``nuts.generator_path``)
    and seeded random images standing in for the validation split."""
    import torch
    from conftest import tiny_generator

    import brgm_pyro as bp

    nuts = _load("nuts", monkeypatch)
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    nuts.generator_path = str(bp.save_generator(G, tmp_path / "g.safetensors"))
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(nuts, "load_fashion_mnist", lambda split: (images, torch.zeros(3)))
    return nuts


def test_nuts_benchmark_reports_the_diagnostics(nuts_benchmark, monkeypatch, capsys, tmp_path):
    """benchmarks/nuts.py on a tiny generator (random images standing in for the validation split):
    it runs the Laplace-preconditioned NUTS and prints and saves R-hat and ESS per monitored scalar."""
    import json

    nuts = nuts_benchmark
    out = tmp_path / "nuts.json"
    argv = ["nuts.py", "--generator", nuts.generator_path, "--num-samples", "4", "--warmup", "4",
            "--max-tree-depth", "2", "--perceptual", "none", "--image", "1", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    nuts.main()
    printed = capsys.readouterr().out
    assert "model learned-noise" in printed and "| sigma_pixel[0] |" in printed and "max R-hat" in printed
    saved = json.loads(out.read_text())["diagnostics"]
    assert saved["precondition_s"] > 0 and saved["mean_tree_depth"] <= 2
    assert {"r_hat", "ess_bulk", "ess_bulk_per_s"} <= set(saved["monitored"]["sigma_pixel[0]"])


def test_nuts_benchmark_pools_chains_run_apart(nuts_benchmark, monkeypatch, capsys, tmp_path):
    """Chains run as separate single-chain processes (--netcdf) and pooled with --merge give the
    diagnostics of the same chains run together: chain k of a run is seeded seed + k."""
    import json

    nuts = nuts_benchmark
    common = ["nuts.py", "--generator", nuts.generator_path, "--num-samples", "5", "--warmup", "5",
              "--max-tree-depth", "3", "--perceptual", "none", "--task", "inpaint"]
    monkeypatch.setattr(sys, "argv", common + ["--num-chains", "2", "--json", str(tmp_path / "together.json")])
    nuts.main()
    for k in (0, 1):
        argv = common + ["--chain", str(k), "--netcdf", str(tmp_path / f"c{k}.nc"),
                         "--json", str(tmp_path / f"c{k}.json")]
        monkeypatch.setattr(sys, "argv", argv)
        nuts.main()
    capsys.readouterr()
    merged_path = tmp_path / "merged.json"
    argv = ["nuts.py", "--merge", str(tmp_path / "c0.nc"), str(tmp_path / "c1.nc"), "--json", str(merged_path)]
    monkeypatch.setattr(sys, "argv", argv)
    nuts.main()
    printed = capsys.readouterr().out
    assert "2 chains x 5 kept draws" in printed and "max R-hat" in printed
    together = json.loads((tmp_path / "together.json").read_text())["diagnostics"]["monitored"]
    merged = json.loads(merged_path.read_text())["monitored"]
    assert set(merged) == set(together)
    for label in together:
        assert merged[label]["r_hat"] == pytest.approx(together[label]["r_hat"], rel=1e-6, nan_ok=True)
        assert merged[label]["ess_bulk"] == pytest.approx(together[label]["ess_bulk"], rel=1e-6)
    # one file is not a pool
    monkeypatch.setattr(sys, "argv", ["nuts.py", "--merge", str(tmp_path / "c0.nc")])
    with pytest.raises(SystemExit, match="at least two chains"):
        nuts.main()


def test_undercoverage_benchmark_measures_reach_modes_and_noise(monkeypatch, tmp_path, capsys):
    """benchmarks/undercoverage.py on the draws benchmarks/calibration.py recorded for a tiny 32 px
    generator (random images standing in for the test split): every analysis reports, resumably."""
    import torch
    from conftest import tiny_generator

    import brgm_pyro as bp

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    calibration = _load("calibration", monkeypatch)
    monkeypatch.setitem(sys.modules, "calibration", calibration)
    undercoverage = _load("undercoverage", monkeypatch)
    G = tiny_generator(32).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    path = str(bp.save_generator(G, tmp_path / "g.safetensors"))
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(calibration, "truth_image", lambda args, G, index: images[index : index + 1])
    shared = ["--generator", path, "--data", "test", "--num-images", "2", "--tasks", "superres-x4,inpaint-free",
              "--num-samples", "4", "--map-steps", "2", "--svi-steps", "2", "--perceptual", "none",
              "--sigma-reach", "0.05", "--methods", "svi-normal"]
    calibration.main(shared + ["--out", str(tmp_path / "cal")])
    argv = ["--calibration-out", str(tmp_path / "cal"), "--out", str(tmp_path / "uc"), "--starts", "2",
            "--figure", str(tmp_path / "reach.png"), "--modes-figure", str(tmp_path / "modes.png"),
            "--json", str(tmp_path / "uc.json")] + shared
    first = undercoverage.main(argv)
    printed = capsys.readouterr().out
    assert "residual correlation by lag" in printed and "| inpaint-free | 2 |" in printed
    assert len(first["reach"]) == 2 and len(first["modes"]) == len(first["noise"]) == 4
    assert {"cover90_generator_vs_fit", "rms_unpinned"} <= set(first["reach"][0]["superres-x4"])
    assert (tmp_path / "reach.png").stat().st_size > 0 and (tmp_path / "modes.png").stat().st_size > 0
    lines = (tmp_path / "uc" / "results.jsonl").read_text().splitlines()
    again = undercoverage.main(argv)
    assert (tmp_path / "uc" / "results.jsonl").read_text().splitlines() == lines  # nothing measured again
    assert len(again["modes"]) == 4
