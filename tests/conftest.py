import functools
import gzip
import hashlib
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from brgm_pyro.fmnist import data
from brgm_pyro.stylegan2 import StyleGAN2Generator, to_unit

DATA_MISSING = (
    "Fashion-MNIST is not installed: run `sudo apt-get install dataset-fashion-mnist` (`make test` does "
    f"it as root), or set {data.DATA_DIR_ENV} to a folder holding its four files"
)


@functools.cache
def load_script(relative: str) -> types.ModuleType:
    """A script of the repository (e.g. "benchmarks/fuzz_readers.py") as a module, registered in sys.modules
    under its stem (its dataclasses need that), loaded once."""
    path = Path(__file__).resolve().parent.parent / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_generator(resolution: int = 16, channels: int = 1, seed: int = 0, **kwargs) -> StyleGAN2Generator:
    """A small random generator (a few thousand parameters) for fast tests."""
    config = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)
    config.update(kwargs)
    return StyleGAN2Generator(resolution=resolution, channels=channels, seed=seed, **config).eval()


def sample_images(G: StyleGAN2Generator, num: int, seed: int = 1) -> torch.Tensor:
    """Images G(w) in [0, 1] for w from the mapping of z drawn with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return to_unit(G.synthesis(G.mapping(torch.randn(num, G.z_dim, generator=gen))), clamp=True)


@pytest.fixture(scope="session", autouse=True)
def _bank_cache(tmp_path_factory):
    """The prior banks of the mode search in one folder of this session (never the user's cache), of 512
    draws (the tests that measure the search set their own size): a tiny generator's bank is built once
    and shared by the tests that use it."""
    import os

    settings = {"BRGM_CACHE_DIR": str(tmp_path_factory.mktemp("brgm-cache")), "BRGM_BANK_SIZE": "512"}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session", autouse=True)
def _threads():
    # The tests use tiny networks: one thread avoids thread start-up costs that dominate them. The
    # environment variable sets the threads of the brgm commands the tests run, here and in subprocesses.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BRGM_THREADS", "1")
        yield
    torch.set_num_threads(previous)


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8 images (N, H, W) or labels (N,)) as an idx file, the format of Fashion-MNIST."""
    magic = 2051 if array.ndim == 3 else 2049
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def fake_fashion_mnist(monkeypatch, train: int, test: int, seed: int = 0) -> tuple[dict, dict]:
    """The four Fashion-MNIST files made of ``train`` + ``test`` random images (labels counting 0-9),
    whose MD5s replace the official ones while the test runs: (arrays by name, gzipped bytes by file name)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(test) + 3).astype(np.uint8) % 10,
    }
    gz = {}
    for name, array in arrays.items():
        raw = idx_bytes(array)
        gz[f"{name}.gz"] = gzip.compress(raw, mtime=0)
        monkeypatch.setitem(data.RAW_MD5, name, hashlib.md5(raw).hexdigest())
        monkeypatch.setitem(data.GZ_MD5, f"{name}.gz", hashlib.md5(gz[f"{name}.gz"]).hexdigest())
    return arrays, gz


def require_data(folder: Path | None) -> Path:
    """``folder`` if it holds the four Fashion-MNIST files; otherwise the test is skipped, naming the fix."""
    if folder is None or not data.is_complete(folder):
        pytest.skip(DATA_MISSING)
    return folder


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # pytest reports a skip at the test that was skipped; reported here instead, the skips for the
    # missing data set fold into one line of the summary.
    report = (yield).get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and report.longrepr[2].endswith(DATA_MISSING):
        report.longrepr = (__file__, require_data.__code__.co_firstlineno, report.longrepr[2])


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """The folder of the real Fashion-MNIST files, checked against their checksums; never downloaded."""
    require_data(data.local_dir())
    return data.find_fashion_mnist(download=False)


# A process that claims (or joins) the output folder argv[1] as the run "sample", says so, and waits to be killed.
HOLDER = (
    "import sys, time\n"
    "from brgm_pyro.output_lock import claim_output, join_output\n"
    "lock = claim_output(sys.argv[1], 'sample') if sys.argv[2] == 'claim' else join_output(sys.argv[1])\n"
    "print('holding', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def holders():
    """Other processes that hold an output folder: ``start(folder, "claim" | "join")`` returns one once it holds it."""
    started = []

    def start(folder, how="claim"):
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), how], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        started.append(process)
        line = process.stdout.readline()
        assert line == "holding\n", process.stderr.read()
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()
