"""brgm_pyro.threads and --threads: which count wins, the cores free against real busy processes, the CPU affinity,
OpenMP's wait policy set before torch loads, and the count a command ran with (and the caller's, restored after)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import sample_images, tiny_generator

import brgm_pyro as bp
from brgm_pyro import io, threads
from brgm_pyro.cli import main
from brgm_pyro.dataset.manifest import RECORDS_DIR
from brgm_pyro.errors import InputError


def test_threads_then_the_environment_then_every_usable_core():
    usable = threads.usable_cores()
    assert threads.choose(3, {threads.ENV: "2", "OMP_NUM_THREADS": "4"}) == threads.ThreadChoice(3, "--threads")
    assert threads.choose(None, {threads.ENV: "2", "OMP_NUM_THREADS": "4"}) == threads.ThreadChoice(2, threads.ENV)
    assert threads.choose(None, {"OMP_NUM_THREADS": "4,2"}) == threads.ThreadChoice(4, "OMP_NUM_THREADS")
    assert threads.choose(None, {}) == threads.ThreadChoice(usable, "usable cores")
    for bad in ("0", "two", "-1"):
        with pytest.raises(InputError, match=rf"^{threads.ENV} must be a positive number of threads, got '{bad}'"):
            threads.choose(None, {threads.ENV: bad})


def test_a_cgroup_quota_caps_the_usable_cores(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 0.5)
    assert threads.usable_cores() == 1
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: cores + 8.0)
    assert threads.usable_cores() == cores


def test_the_usable_cores_follow_the_cpu_affinity():
    code = "import os\nfrom brgm_pyro import threads\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n" \
           "print(threads.usable_cores())\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "1\n", done.stderr
    assert threads.usable_cores() <= len(os.sched_getaffinity(0))


def test_openmp_sleeps_when_out_of_work_unless_told_otherwise(monkeypatch):
    """The wait policy is in the environment while a command runs (the command imports torch after it is set:
    tests/test_cli_help.py checks that nothing imports torch before), and a policy the user set is left alone."""
    for given, during in (({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"), ({"GOMP_SPINCOUNT": "300000"}, None)):
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
        for name, value in given.items():
            monkeypatch.setenv(name, value)
        with threads.using(threads.ThreadChoice(2, "--threads")):
            assert (os.environ.get("OMP_WAIT_POLICY"), torch.get_num_threads()) == (during, 2)
        assert os.environ.get("OMP_WAIT_POLICY") == given.get("OMP_WAIT_POLICY")
        assert torch.get_num_threads() == 1


def test_a_command_runs_with_its_threads_and_gives_the_callers_back(tmp_path, capsys, monkeypatch):
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    generator = bp.save_generator(G, tmp_path / "g.safetensors")
    (tmp_path / "in").mkdir()
    io.write_image(tmp_path / "in" / "a.png", bp.forward.Downsample(2)(sample_images(G, 1))[0].clamp(0, 1))
    argv = ["reconstruct-dataset", str(tmp_path / "in"), "--generator", str(generator), "--task", "superres",
            "--factor", "2", "--perceptual", "none", "--steps", "1", "--quiet"]
    assert torch.get_num_threads() == 1
    monkeypatch.setenv(threads.ENV, "3")  # --threads wins
    assert main([*argv, "--out", str(tmp_path / "a"), "--threads", "2"]) == 0, capsys.readouterr().err
    attempt = json.loads(next((tmp_path / "a" / RECORDS_DIR).glob("*.jsonl")).read_text().splitlines()[0])
    assert attempt["threads"] == 2
    assert torch.get_num_threads() == 1
    monkeypatch.setenv(threads.ENV, "many")
    assert main([*argv, "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err == (f"brgm: error: {threads.ENV} must be a positive number of threads, got 'many'; "
                                       f"e.g. {threads.ENV}=1.\n")
