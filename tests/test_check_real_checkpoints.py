"""scripts/check_real_checkpoints.py given a folder that is not the checkout it asks for names it (its smoke run is in test_scripts.py)."""

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
