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
