"""`brgm convert IN OUT.safetensors` for every supported format: the converted file is the same generator and keeps what it came from."""

from __future__ import annotations

import pytest
from foreign_files import (
    assert_same_generator,
    random_generator,
    write_nvidia_pickle,
    write_rosinality,
    write_tf_pickle,
)

from brgm_pyro.checkpoints import load_generator, save_generator
from brgm_pyro.cli import main

WRITERS = {
    "stylegan2-ada-pytorch": lambda G, path: write_nvidia_pickle(G, path, path.with_name("ran")),
    "stylegan3": lambda G, path: write_nvidia_pickle(G, path, path.with_name("ran"), layout="stylegan3"),
    "tf-stylegan2": lambda G, path: write_tf_pickle(G, path, path.with_name("ran")),
    "tf-stylegan2-ada": lambda G, path: write_tf_pickle(
        G, path, path.with_name("ran"), release="stylegan2-ada"
    ),
    "rosinality-convert_weight": lambda G, path: write_rosinality(G, path, "convert_weight"),
    "brgm-safetensors": lambda G, path: save_generator(G, path.with_suffix(".safetensors")),
}
FORMAT = {"tf": "tf-pkl", "rosinality": "rosinality-pt", "brgm": "brgm-safetensors"}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_convert_every_supported_format(tmp_path, capsys, writer):
    G = random_generator(3, conv_clamp=256 if "ada" in writer or writer == "stylegan3" else None)
    source = WRITERS[writer](G, tmp_path / "input.pkl")
    out = tmp_path / "converted" / "prior.safetensors"
    assert main(["convert", str(source), str(out)]) == 0
    assert "brgm convert: wrote" in capsys.readouterr().out
    H = load_generator(out)
    assert_same_generator(G, H)
    assert H.info["source_format"] == FORMAT.get(writer.split("-")[0], "nvidia-pkl")
    assert not (tmp_path / "ran").exists()
