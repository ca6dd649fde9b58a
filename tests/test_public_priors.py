"""Tests of the published priors by name: the registry (package data), the download, the offline message, and the checksum checked before anything is unpickled."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request
from importlib import resources

import pytest
from foreign_files import assert_same_generator, random_generator, write_nvidia_pickle

from brgm_pyro.checkpoints import FORMATS, PUBLIC_PRIORS, CheckpointError, load_generator, load_public_prior
from brgm_pyro.checkpoints import unpickler as unpickler_module
from brgm_pyro.checkpoints.public import public_prior_path, record_path


def test_registry_is_package_data_and_complete():
    registry = json.loads(resources.files("brgm_pyro.checkpoints").joinpath("public_priors.json").read_text())
    assert set(registry["priors"]) == set(PUBLIC_PRIORS)
    filenames = [entry["filename"] for entry in PUBLIC_PRIORS.values()]
    assert len(set(filenames)) == len(filenames)
    for name, entry in PUBLIC_PRIORS.items():
        assert entry["url"].startswith("https://"), name
        assert entry["source_format"] in FORMATS, name
        assert entry["resolution"] in (256, 512, 1024), name
        assert entry["perceptual"] == "lpips-vgg", name
        assert "commercial" in entry["licence"], name  # the licence text, resolved from its key
        assert {"size", "sha256", "checksum_source", "channels", "data"} <= set(entry), name
        # A checksum always says where it comes from; none is made up.
        assert (entry["sha256"] is None) == (entry["checksum_source"] is None), name
        assert entry["sha256"] is None or len(entry["sha256"]) == 64, name


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """Torch hub cache in tmp_path, and any attempt to reach the network fails as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    return calls


@pytest.fixture
def no_unpickling(monkeypatch):
    """Fail the test if anything is unpickled by the restricted unpickler."""

    def refuse(self):
        raise AssertionError("the file was unpickled before its checksum was checked")

    monkeypatch.setattr(unpickler_module._RestrictedUnpickler, "load", refuse)


@pytest.mark.parametrize("name", ["ffhq-1024", "ffhq-1024-tf"])
def test_offline_download_says_where_to_place_the_file(offline_hub, tmp_path, name):
    entry = PUBLIC_PRIORS[name]
    expected = tmp_path / "torch" / "hub" / "checkpoints" / entry["filename"]
    assert public_prior_path(name) == expected
    with pytest.raises(CheckpointError) as info:
        load_generator(name)
    message = str(info.value)
    assert entry["url"] in message and f"place it at {expected}" in message and "then run again" in message
    if entry["sha256"]:
        assert f"({entry['size']} bytes, SHA-256 {entry['sha256']})" in message
    assert "\n" not in message and not expected.exists()


def test_unknown_public_prior_lists_the_names():
    with pytest.raises(ValueError, match="ffhq-1024"):
        load_public_prior("no-such-prior")


def _tiny_entry(data: bytes, **overrides) -> dict:
    entry = dict(PUBLIC_PRIORS["ffhq-256"], url="https://example.invalid/tiny.pkl", filename="tiny-test.pkl")
    entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data), checksum_source="this test")
    entry.update(overrides)
    return entry


@pytest.fixture
def tiny_pickle(tmp_path):
    G = random_generator()
    return G, write_nvidia_pickle(G, tmp_path / "src.pkl", tmp_path / "ran").read_bytes()


def _place(name: str, data: bytes):
    cached = public_prior_path(name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(data)
    return cached


def test_cached_prior_is_used_without_network(offline_hub, tiny_pickle, monkeypatch):
    G, data = tiny_pickle
    monkeypatch.setitem(PUBLIC_PRIORS, "tiny-test", _tiny_entry(data))
    _place("tiny-test", data)
    H = load_generator("tiny-test")
    assert offline_hub == []
    assert H.name == "tiny-test" and H.card["licence"] == PUBLIC_PRIORS["tiny-test"]["licence"]
    assert H.card["perceptual"] == "lpips-vgg" and H.info["prior"] == "tiny-test"
    assert_same_generator(G, H)


@pytest.mark.parametrize(
    "override, problem", [({"sha256": "0" * 64}, "fails its sha256 check"), ({"size": 10}, "bytes where 10")]
)
def test_published_checksum_is_checked_before_unpickling(
    offline_hub, tiny_pickle, monkeypatch, no_unpickling, override, problem
):
    _, data = tiny_pickle
    monkeypatch.setitem(PUBLIC_PRIORS, "tiny-test", _tiny_entry(data, **override))
    cached = _place("tiny-test", data)
    with pytest.raises(CheckpointError, match=f"{problem}.*published.*delete it") as info:
        load_public_prior("tiny-test")
    assert str(cached) in str(info.value)


def test_unpublished_checksum_is_recorded_at_first_use_and_checked_after(
    offline_hub, tiny_pickle, monkeypatch
):
    G, data = tiny_pickle
    monkeypatch.setitem(
        PUBLIC_PRIORS, "tiny-test", _tiny_entry(data, sha256=None, size=None, checksum_source=None)
    )
    cached = _place("tiny-test", data)  # placed by hand, as the offline message says
    assert_same_generator(G, load_public_prior("tiny-test"))
    record = json.loads(record_path(cached).read_text())
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert_same_generator(G, load_public_prior("tiny-test"))  # the record is checked, and passes
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0xFF  # same size, other content
    cached.write_bytes(bytes(changed))
    monkeypatch.setattr(unpickler_module._RestrictedUnpickler, "load", lambda self: pytest.fail("unpickled"))
    with pytest.raises(
        CheckpointError,
        match=f"fails its sha256 check .*recorded at its first download.*delete it and {record_path(cached)}",
    ):
        load_public_prior("tiny-test")


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


@pytest.mark.parametrize("published", ["good", "bad", "none"])
def test_download_is_atomic_and_checked(tmp_path, monkeypatch, tiny_pickle, published):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    G, data = tiny_pickle
    overrides = {
        "good": {},
        "bad": {"sha256": "f" * 64},
        "none": {"sha256": None, "size": None, "checksum_source": None},
    }
    entry = _tiny_entry(data, **overrides[published])
    monkeypatch.setitem(PUBLIC_PRIORS, "tiny-test", entry)
    requested = []

    def serve(request, timeout=None):
        requested.append(request.full_url)
        return _FakeResponse(data)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    dest = public_prior_path("tiny-test")
    if published == "bad":
        with pytest.raises(CheckpointError, match="fails its sha256 check.*so it was not kept"):
            load_public_prior("tiny-test")
        assert sorted(p.name for p in dest.parent.iterdir()) == []
    else:
        assert_same_generator(G, load_public_prior("tiny-test"))
        assert dest.read_bytes() == data
        kept = [dest.name] + ([record_path(dest).name] if published == "none" else [])
        assert sorted(p.name for p in dest.parent.iterdir()) == sorted(kept)
    assert requested == [entry["url"]]
