"""brgm info and brgm convert."""

import json
from dataclasses import asdict

import torch
from test_importers import random_generator, write_nvidia_pickle

from brgm_pyro import io
from brgm_pyro.card import PriorCard
from brgm_pyro.checkpoints import load_generator, prior_card
from brgm_pyro.cli import main


def test_convert_nvidia_pickle_and_info(tmp_path, capsys):
    G = random_generator(channels=3)
    pkl = write_nvidia_pickle(G, tmp_path / "network.pkl", tmp_path / "sentinel")
    out = tmp_path / "converted" / "prior.safetensors"
    assert main(["convert", str(pkl), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "recognised NVIDIA" in printed and "StyleGAN2 generator" in printed
    H = load_generator(out)
    assert H.info["recognised"] in printed
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(G.synthesis(ws), H.synthesis(ws), atol=1e-5)
    assert H.info["source_format"] == "nvidia-pkl"
    capsys.readouterr()
    assert main(["info", str(pkl)]) == 0
    text = capsys.readouterr().out
    assert "nvidia-pkl" in text and f"num_ws  {G.num_ws}".replace("  ", " ") in " ".join(text.split())
    assert main(["info", str(out)]) == 0
    assert "brgm-safetensors" in capsys.readouterr().out


def test_convert_refuses_bad_requests(tmp_path, capsys):
    G = random_generator(channels=1)
    pkl = write_nvidia_pickle(G, tmp_path / "network.pkl", tmp_path / "sentinel")
    assert main(["convert", str(pkl), str(tmp_path / "out.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    existing = tmp_path / "exists.safetensors"
    existing.write_bytes(b"keep me")
    assert main(["convert", str(pkl), str(existing)]) == 2
    assert "--force" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    assert main(["convert", str(tmp_path / "missing.pkl"), str(tmp_path / "o.safetensors")]) == 2
    assert not (tmp_path / "o.safetensors").exists()
    assert "No generator file" in capsys.readouterr().err
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 50)
    assert main(["info", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("brgm: error:") and len(err.strip().splitlines()) == 1


def test_a_converted_prior_keeps_its_card_and_runs_with_its_tuned_settings(tmp_path, capsys):
    """`brgm convert fashion-mnist-32 x.safetensors`: --generator x.safetensors reconstructs with the card's
    parameters, schedule and perceptual network, as the prior's name does."""
    out = tmp_path / "x.safetensors"
    assert main(["convert", "fashion-mnist-32", str(out)]) == 0
    assert "with its card (tuned settings)" in capsys.readouterr().out
    assert load_generator(out).card == prior_card("fashion-mnist-32")
    low = tmp_path / "low.png"
    io.write_image(low, torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)))
    settings = {}
    for generator in ("fashion-mnist-32", str(out)):
        folder = tmp_path / f"rec-{len(settings)}"
        assert main(["reconstruct", str(low), "--generator", generator, "--task", "superres", "--steps", "1",
                     "--out", str(folder), "--quiet"]) == 0
        settings[generator] = json.loads((folder / "brgm.json").read_text())["settings"]
    named, converted = settings.values()
    card = PriorCard.of(load_generator("fashion-mnist-32"))
    assert converted["params"] == named["params"] == asdict(card.params)
    assert converted["schedule"] == named["schedule"] and converted["schedule"]["lr"] == card.schedule.lr
    assert converted["perceptual"] == named["perceptual"] == {"requested": "auto", "network": "FMNISTPercept"}


def test_converting_a_file_without_a_card_says_so(tmp_path, capsys):
    pkl = write_nvidia_pickle(random_generator(channels=1), tmp_path / "network.pkl", tmp_path / "sentinel")
    assert main(["convert", str(pkl), str(tmp_path / "out.safetensors")]) == 0
    assert "without a card (the library's defaults)" in capsys.readouterr().out
    assert getattr(load_generator(tmp_path / "out.safetensors"), "card", None) is None
