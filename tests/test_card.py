"""The prior's card: a shipped prior's reconstruction defaults, read once and used by reconstruct and sample_posterior."""

import json
from dataclasses import replace
from importlib import resources

import pytest
from conftest import sample_images, tiny_generator

import brgm_pyro as bp
from brgm_pyro import forward as fw
from brgm_pyro.card import PriorCard
from brgm_pyro.sampling import sample_posterior

NAME = "fashion-mnist-32"


@pytest.fixture(scope="module")
def shipped():
    """The default prior and its card as shipped in the package, read from the file itself."""
    card = json.loads((resources.files("brgm_pyro") / "priors" / f"{NAME}.json").read_text())
    return bp.load_generator(NAME), card


def test_the_card_of_a_shipped_prior_holds_its_file(shipped):
    G, card = shipped
    read = PriorCard.of(G)
    assert read.params == bp.BRGMParams(**card["params"], sigma_reach=card["sigma_reach"])
    assert read.schedule == bp.MAPSchedule(**card["schedule"])
    assert read.perceptual == card["perceptual"] == "fmnist"
    assert read.sigma_reach == pytest.approx(card["sigma_reach"]) and read.sigma_reach > 0


def test_a_bare_generator_gets_the_library_defaults():
    read = PriorCard.of(tiny_generator(16))
    assert read == PriorCard(params=None, schedule=bp.MAPSchedule(), perceptual=None, sigma_reach=None)
    G = tiny_generator(16)
    f = fw.Downsample(2)
    rec = bp.reconstruct(f(sample_images(G, 1)).clamp(0, 1), f, G, steps=2, progress=False)
    assert rec.params == bp.BRGMParams() and rec.schedule == replace(bp.MAPSchedule(), steps=2)
    assert rec.settings["perceptual"] is None


def test_reconstruct_and_sample_posterior_take_their_defaults_from_the_card(shipped):
    G, card = shipped
    f = fw.Downsample(4, "bicubic")
    y = f(sample_images(G, 1, seed=2)).clamp(0, 1)
    rec = bp.reconstruct(y, f, G, steps=2, progress=False)
    # steps overrides the card's schedule; its learning rate stays the card's
    assert rec.schedule == bp.MAPSchedule(**{**card["schedule"], "steps": 2})
    assert rec.params == bp.BRGMParams(**card["params"], sigma_reach=card["sigma_reach"])
    assert rec.settings["perceptual"] is not None and rec.losses["percept"].shape == (3, 1)  # 2 steps and the end
    post = sample_posterior(y, f, G, "svi", 2, map_result=rec, guide="normal", steps=2, progress=False)
    assert post.sigma_reach == pytest.approx(card["sigma_reach"])
    assert post.settings["params"] == {**card["params"], "sigma_reach": card["sigma_reach"]}
