"""The comparison benchmarks run with tiny arguments (a tiny 32 px generator, random images standing in for
Fashion-MNIST) and write what they promise."""

import json
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_generator

import brgm_pyro as bp
from brgm_pyro import data

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "benchmarks/close_the_gap.py": "--generator {generator} --other-prior none --images 2 --steps 2 --competitors '' "
                                   "--tasks superres-x8 --only brgm,brgm-4-starts --out {tmp}/gap --quiet",
    "benchmarks/ablation.py": "--generator {generator} --split val --images 2 --steps 2 --perceptual fmnist "
                              "--out {tmp}/ablation --quiet",
    "benchmarks/shifted_corruptions.py": "--generator {generator} --split val --images 2 --widths 1,2 --steps 2 "
                                         "--posterior --competitors '' --out {tmp}/shifted --quiet",
    "benchmarks/steps_quality.py": "--generator {generator} --images 2 --tasks superres-x4 --authors-steps 1,2 "
                                   "--card-steps 1 --out {tmp}/steps --quiet",
}


@pytest.fixture(scope="module")
def generator_path(tmp_path_factory) -> str:
    G = tiny_generator(32).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    return str(bp.save_generator(G, tmp_path_factory.mktemp("generator") / "g.safetensors"))


def _run(script: str, generator: str, tmp_path: Path, monkeypatch, capsys) -> str:
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(data, "load_fashion_mnist", lambda split, pad_to=32: (images, torch.arange(4)))
    arguments = shlex.split(SCRIPTS[script].format(generator=generator, tmp=tmp_path))
    monkeypatch.setattr(sys, "argv", [script, *arguments])
    capsys.readouterr()
    runpy.run_path(str(REPO / script), run_name="__main__")
    return capsys.readouterr().out


def test_close_the_gap(generator_path, tmp_path, monkeypatch, capsys):
    printed = _run("benchmarks/close_the_gap.py", generator_path, tmp_path, monkeypatch, capsys)
    assert "| brgm-4-starts |" in printed
    table = json.loads((tmp_path / "gap" / "superres-x8" / "results.json").read_text())["table"]
    assert set(table) == {"brgm", "brgm-4-starts"}


def test_ablation_writes_its_table_and_figure(generator_path, tmp_path, monkeypatch, capsys):
    printed = _run("benchmarks/ablation.py", generator_path, tmp_path, monkeypatch, capsys)
    for task in ("superres-x8", "inpaint"):
        table = json.loads((tmp_path / "ablation" / task / "ablation.json").read_text())["table"]
        assert list(table) == ["projector", "projector+fixed-noise", "projector+w-plus", "projector+pixel",
                               "projector+prior", "projector+colinear", "brgm"]
        assert (tmp_path / "ablation" / task / "ablation.png").exists()
    assert printed.count("| projector+colinear |") == 2


def test_shifted_corruptions_report_the_recovered_width(generator_path, tmp_path, monkeypatch, capsys):
    printed = _run("benchmarks/shifted_corruptions.py", generator_path, tmp_path, monkeypatch, capsys)
    recovered = json.loads((tmp_path / "shifted" / "recovered.json").read_text())
    assert set(recovered) == {"1.0", "2.0"}
    for entries in recovered.values():
        assert set(entries) == {"brgm-unknown-blur", "brgm-mean-unknown-blur"}
        assert all(entry["median_sigma_b"] > 0 for entry in entries.values())
    assert "| 2 | brgm-unknown-blur |" in printed


def test_steps_quality(generator_path, tmp_path, monkeypatch, capsys):
    printed = _run("benchmarks/steps_quality.py", generator_path, tmp_path, monkeypatch, capsys)
    assert "| authors | 2 |" in printed and "| card | 1 |" in printed
