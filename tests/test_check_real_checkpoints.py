"""scripts/check_real_checkpoints.py without the real checkouts: it names what it needs and never reports a pass (its
real check runs by hand, docs/results/checkpoints.md)."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_real_checkpoints.py"


def _load(monkeypatch):
    spec = importlib.util.spec_from_file_location("check_real_checkpoints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_real_checkpoints", module)
    spec.loader.exec_module(module)
    return module


def test_a_folder_that_is_not_the_checkout_is_named(monkeypatch, capsys, tmp_path):
    assert _load(monkeypatch).main(["--stylegan3", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a checkout of NVlabs/stylegan3" in capsys.readouterr().err


def test_without_checkouts_nothing_is_checked_and_it_does_not_pass(monkeypatch, capsys):
    assert _load(monkeypatch).main([]) == 2
    message = capsys.readouterr().err
    assert message.startswith("Nothing was checked") and "TensorFlow 1.x" in message
    for repository in ("NVlabs/stylegan2-ada-pytorch", "NVlabs/stylegan3", "rosinality/stylegan2-pytorch"):
        assert f"git clone https://github.com/{repository}" in message
