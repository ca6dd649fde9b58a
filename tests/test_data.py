"""Fashion-MNIST: where the files are found, checksums, download, offline message, splits."""

import gzip
import hashlib
import io
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_MISSING, fake_fashion_mnist, idx_bytes, require_data

from brgm_pyro.fmnist import data

NAMES = list(data.FILES.values())
N_TRAIN, N_TEST = 12, 4


@pytest.fixture
def fake_files(monkeypatch):
    """Small idx files (12 training, 4 test images) whose MD5s replace the official ones."""
    return fake_fashion_mnist(monkeypatch, N_TRAIN, N_TEST)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No BRGM_DATA_DIR, an empty system folder and cache, and a network that refuses to connect."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(data.SYSTEM_DIR_ENV, raising=False)
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def refuse(*args, **kwargs):
        raise OSError("network is blocked in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return tmp_path


def _fill(folder, gz, names=NAMES):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.gz").write_bytes(gz[f"{name}.gz"])
    return folder


def test_cache_dir_follows_xdg(isolated):
    assert data.cache_dir() == isolated / "xdg" / "brgm_pyro" / "fashion-mnist"


def test_env_dir_wins_over_system_dir(isolated, fake_files, monkeypatch):
    _, gz = fake_files
    env_dir = _fill(isolated / "env", gz)
    _fill(data.SYSTEM_DIR, gz)
    _fill(data.cache_dir(), gz)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    assert data.find_fashion_mnist(download=False) == env_dir


def test_system_dir_wins_over_cache(isolated, fake_files):
    _, gz = fake_files
    _fill(data.SYSTEM_DIR, gz)
    _fill(data.cache_dir(), gz)
    assert data.find_fashion_mnist(download=False) == data.SYSTEM_DIR


def test_incomplete_dirs_are_skipped(isolated, fake_files, monkeypatch):
    _, gz = fake_files
    env_dir = _fill(isolated / "env", gz, NAMES[:3])
    _fill(data.SYSTEM_DIR, gz, NAMES[1:])
    _fill(data.cache_dir(), gz)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    assert data.find_fashion_mnist(download=False) == data.cache_dir()


def test_plain_decompressed_files_count(isolated, fake_files):
    arrays, _ = fake_files
    data.SYSTEM_DIR.mkdir()
    for name, array in arrays.items():
        (data.SYSTEM_DIR / name).write_bytes(idx_bytes(array))
    _, labels = data.load_fashion_mnist("test")
    assert torch.equal(labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)))


def test_corrupt_content_fails_checksum(isolated, fake_files, monkeypatch):
    arrays, gz = fake_files
    env_dir = _fill(isolated / "env", gz)
    images = arrays["train-images-idx3-ubyte"].copy()
    images[0, 0, 0] ^= 0xFF
    (env_dir / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    with pytest.raises(data.DatasetError, match=r"train-images-idx3-ubyte\.gz fails its checksum check"):
        data.find_fashion_mnist(download=False)


def test_truncated_gzip_is_rejected(isolated, fake_files, monkeypatch):
    _, gz = fake_files
    env_dir = _fill(isolated / "env", gz)
    (env_dir / "t10k-images-idx3-ubyte.gz").write_bytes(gz["t10k-images-idx3-ubyte.gz"][:-40])
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    with pytest.raises(data.DatasetError, match=r"t10k-images-idx3-ubyte\.gz is not a valid gzip file"):
        data.find_fashion_mnist(download=False)


def test_wrong_magic_number_is_rejected(isolated, fake_files, monkeypatch):
    _, gz = fake_files
    env_dir = _fill(isolated / "env", gz)
    bad = b"\x00\x00\x08\x04" + b"\x00" * 20  # magic 2052: not an unsigned-byte idx file
    (env_dir / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bad))
    monkeypatch.setitem(data.RAW_MD5, "train-labels-idx1-ubyte", hashlib.md5(bad).hexdigest())
    monkeypatch.setenv(data.DATA_DIR_ENV, str(env_dir))
    with pytest.raises(data.DatasetError, match="magic number 2052"):
        data.find_fashion_mnist(download=False)


def test_offline_error_names_apt_and_env_var(isolated):
    with pytest.raises(RuntimeError) as info:
        data.find_fashion_mnist(download=True)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "BRGM_DATA_DIR" in message
    assert "\n" not in message and message.endswith(".")
    assert not data.cache_dir().exists() or not any(data.cache_dir().iterdir())


def test_no_download_error_names_apt_and_env_var(isolated):
    with pytest.raises(data.DatasetError, match="apt-get install dataset-fashion-mnist.*BRGM_DATA_DIR"):
        data.find_fashion_mnist(download=False)


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def _serve(monkeypatch, gz, corrupt=()):
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        name = url.rsplit("/", 1)[1]
        payload = gz[name]
        if name in corrupt:
            payload = payload[:-1] + bytes([payload[-1] ^ 1])
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


def test_download_into_cache(isolated, fake_files, monkeypatch):
    arrays, gz = fake_files
    cache = _fill(data.cache_dir(), gz, NAMES[:1])  # one file already cached: not fetched again
    requested = _serve(monkeypatch, gz)
    assert data.find_fashion_mnist() == cache
    assert requested == [data.BASE_URL + f"{name}.gz" for name in NAMES[1:]]
    assert sorted(p.name for p in cache.iterdir()) == sorted(gz)  # no temporary files left behind
    for name, payload in gz.items():
        assert (cache / name).read_bytes() == payload

    monkeypatch.setattr(data, "VAL_SIZE", 4)
    images, _ = data.load_fashion_mnist("test")
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float() / 255
    assert torch.equal(images[:, 0, 2:30, 2:30], expected)
    train, _ = data.load_fashion_mnist("train")
    val, val_labels = data.load_fashion_mnist("val")
    full, _ = data.load_fashion_mnist("train_full")
    assert (len(train), len(val), len(full)) == (N_TRAIN - 4, 4, N_TRAIN)
    assert torch.equal(val, full[-4:]) and torch.equal(train, full[:-4])
    assert val_labels.tolist() == [8, 9, 0, 1]


def test_corrupt_download_is_deleted(isolated, fake_files, monkeypatch):
    _, gz = fake_files
    _serve(monkeypatch, gz, corrupt={"train-labels-idx1-ubyte.gz"})
    with pytest.raises(data.DatasetError, match="fails its checksum check .* was deleted"):
        data.find_fashion_mnist()
    assert sorted(p.name for p in data.cache_dir().iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_unknown_split_lists_valid_ones():
    with pytest.raises(ValueError, match="train, val, test, train_full"):
        data.load_fashion_mnist("validation")


def test_root_must_be_complete(tmp_path):
    with pytest.raises(data.DatasetError, match="does not hold all four"):
        data.load_fashion_mnist("test", root=tmp_path)


def test_class_names():
    assert len(data.CLASS_NAMES) == 10
    assert data.CLASS_NAMES[0] == "T-shirt/top" and data.CLASS_NAMES[9] == "Ankle boot"


def test_the_system_setting_names_or_hides_the_system_folder(isolated, fake_files, monkeypatch):
    _, gz = fake_files
    other = _fill(isolated / "elsewhere", gz)
    _fill(data.SYSTEM_DIR, gz)
    monkeypatch.setenv(data.SYSTEM_DIR_ENV, str(other))
    assert data.system_dir() == other and data.find_fashion_mnist(download=False) == other
    monkeypatch.setenv(data.SYSTEM_DIR_ENV, "")
    assert data.system_dir() is None and data.local_dir() is None
    with pytest.raises(data.DatasetError, match="not found locally"):
        data.find_fashion_mnist(download=False)


# ----------------------------------------------------------------------------- the real data


def test_real_splits(fashion_mnist_dir):
    data._read_idx_cached.cache_clear()
    full, full_labels = data.load_fashion_mnist("train_full", root=fashion_mnist_dir)

    assert full.shape == (60000, 1, 32, 32) and full.dtype == torch.float32
    assert full_labels.shape == (60000,) and full_labels.dtype == torch.int64
    assert set(full_labels.tolist()) == set(range(10))
    assert full.min() == 0 and full.max() == 1
    some = full[:2000]
    assert torch.equal((some * 255).round() / 255, some)  # pixel k is exactly k / 255
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert full[:, 0, border].abs().max() == 0
    assert full[:, 0, 2:30, 2:30].amax(dim=(1, 2)).min() > 0  # every image has content

    val, val_labels = data.load_fashion_mnist("val", root=fashion_mnist_dir)
    assert val.shape == (5000, 1, 32, 32)
    assert torch.equal(val, full[-5000:]) and torch.equal(val_labels, full_labels[-5000:])
    del val
    train, train_labels = data.load_fashion_mnist("train", root=fashion_mnist_dir)
    assert train.shape == (55000, 1, 32, 32)
    assert torch.equal(train[:100], full[:100]) and torch.equal(train[-100:], full[54900:55000])
    assert torch.equal(train_labels, full_labels[:55000])
    del train, full

    test, test_labels = data.load_fashion_mnist("test", root=fashion_mnist_dir, pad_to=28)
    assert test.shape == (10000, 1, 28, 28) and test_labels.shape == (10000,)
    assert test_labels.min() == 0 and test_labels.max() == 9


def test_system_dir_found_by_default(monkeypatch):
    system_data = require_data(data.system_dir())
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.find_fashion_mnist(download=False) == system_data


def test_without_the_data_its_tests_are_skipped_in_one_line(tmp_path):
    """A machine without Fashion-MNIST (an empty BRGM_DATA_DIR, the system folder hidden, no download
    possible): the tests that need it are skipped, the others pass, and pytest names the fix in one line."""
    empty = tmp_path / "empty"
    empty.mkdir()
    unreachable = "http://127.0.0.1:9"  # the discard port: nothing listens, so a download fails at once
    env = {**os.environ, data.DATA_DIR_ENV: str(empty), data.SYSTEM_DIR_ENV: "",
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "http_proxy": unreachable, "https_proxy": unreachable}
    tests = Path(__file__).resolve().parent
    # Not this test itself, nor the one that starts a Python of its own (the slowest of the rest).
    others = "not skipped_in_one_line and not without_importing_the_module_first"
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", others,
               str(tests / "test_data.py"), str(tests / "test_fmnist.py")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [line for line in lines if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and skipped[0].endswith(DATA_MISSING), result.stdout
    counts = dict((word, int(n)) for n, word in re.findall(r"(\d+) (\w+)", lines[-1]))
    assert counts["skipped"] >= 8 and counts["passed"] >= 20 and set(counts) == {"passed", "skipped", "deselected"}
