"""Whole folders: sharding and seeds, torchrun with 2 processes against 1, a SIGKILL midway and the rerun,
refused setting changes, failed images recorded, inputs untouched."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import sample_images, tiny_generator

import brgm_pyro as bp
from brgm_pyro import io
from brgm_pyro.cli import main
from brgm_pyro.dataset.manifest import RECORDS_DIR, read_manifest
from brgm_pyro.dataset.run import PosteriorRequest, image_seed, list_images, reconstruct_dataset, shard
from brgm_pyro.errors import InputError

FACTOR = 2
# The fields of a record that say where and when it was made, not what was computed.
PROVENANCE = {"attempt", "rank", "world_size", "host", "pid", "finished", "seconds"}


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    return bp.save_generator(G, tmp_path_factory.mktemp("generator") / "tiny.safetensors")


def _write_inputs(folder: Path, num: int, seed: int = 2) -> Path:
    """``num`` low-resolution images of the tiny generator, a third of them in a subfolder."""
    G = tiny_generator(16)
    low = bp.forward.Downsample(FACTOR, "bicubic")(sample_images(G, num, seed=seed)).clamp(0, 1)
    for i in range(num):
        io.ensure_output_dir(folder / ("scans" if i % 3 == 0 else ""))
        io.write_image(folder / ("scans" if i % 3 == 0 else "") / f"im{i:02d}.png", low[i])
    return folder


def _snapshot(folder: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _records(out: Path) -> list[dict]:
    lines = [line for path in sorted((out / RECORDS_DIR).glob("*.jsonl")) for line in path.read_text().splitlines()]
    return [record for record in map(json.loads, lines) if record["type"] == "image"]


def _done(out: Path) -> list[dict]:
    return [r for r in _records(out) if r["status"] == "done"] if (out / RECORDS_DIR).is_dir() else []


@pytest.fixture
def job(generator_file):
    """The command line of ``brgm reconstruct-dataset`` on the tiny generator: one plain process, or torchrun."""

    def command(inputs, out, processes, steps, batch_size=2, samples=0):
        options = ["reconstruct-dataset", str(inputs), "--out", str(out), "--generator", str(generator_file),
                   "--task", "superres", "--factor", str(FACTOR), "--perceptual", "none", "--steps", str(steps),
                   "--batch-size", str(batch_size), "--quiet"]
        if samples:
            options += ["--posterior", "svi", "--num-samples", str(samples), "--guide", "normal", "--svi-steps", "4"]
        if processes == 1:
            return [sys.executable, "-m", "brgm_pyro.cli", *options]
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        return [sys.executable, *launcher, "-m", "brgm_pyro.cli", *options]

    return command


def _run(argv, timeout=300):
    # PYTHONFAULTHANDLER: a rank that aborts prints every thread's Python stack before torchrun's summary.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-8000:]
    return done


def _reconstruct(inputs, out, generator_file, steps=3, **kwargs):
    kwargs.setdefault("progress", False)
    G = bp.load_generator(generator_file)
    schedule = bp.MAPSchedule(steps=steps)
    return reconstruct_dataset(inputs, out, bp.forward.Downsample(FACTOR), G, perceptual=None, schedule=schedule,
                               **kwargs)


def test_shards_cover_every_image_once_in_batches_that_do_not_depend_on_the_ranks():
    images = [f"im{i:02d}.png" for i in range(11)]
    one = shard(images, 3, 0, 1)
    assert [batch for _, batch in one] == [images[0:3], images[3:6], images[6:9], images[9:11]]
    for world in (2, 3, 5, 7):
        shares = [shard(images, 3, rank, world) for rank in range(world)]
        assert sorted(index for share in shares for index, _ in share) == [index for index, _ in one]
        assert dict(pair for share in shares for pair in share) == dict((i, b) for i, b in one)
    assert image_seed(0, "scans/a.png") == image_seed(0, "scans/a.png")
    seeds = {image_seed(seed, name) for seed in (0, 1) for name in ("a.png", "b.png", "scans/a.png")}
    assert len(seeds) == 6 and all(0 <= s < 2**31 for s in seeds)


def test_batching_changes_the_map_only_by_rounding():
    """The images of a batch share one Adam optimiser; in float64 a batch of 4 and 4 batches of 1 agree to
    rounding, so any float32 difference between batch sizes is rounding amplified by the optimiser."""
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    x = sample_images(G, 4, seed=3).double()
    G = G.double()
    f = bp.forward.Downsample(FACTOR, "bicubic").double()
    y = f(x).clamp(0, 1)
    options = dict(perceptual=None, steps=20, progress=False)
    batch = bp.reconstruct(y, f, G, **options)
    alone = torch.cat([bp.reconstruct(y[i : i + 1], f, G, **options).w for i in range(4)])
    assert batch.w.dtype == torch.float64
    assert (batch.w - alone).abs().max() < 1e-10
    assert (batch.w - G.w_avg).abs().max() > 1e-2  # the optimisation moved


def test_list_images_is_sorted_recursive_and_skips_hidden_and_other_files(tmp_path):
    for name in ("b.png", "a.JPG", "sub/c.png", ".hidden.png", ".cache/d.png", "notes.txt", "sub/e.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert list_images(tmp_path) == ["a.JPG", "b.png", "sub/c.png", "sub/e.tif"]


@pytest.mark.slow
def test_two_processes_give_the_same_per_image_results_as_one(tmp_path, job):
    """``torchrun --nproc_per_node 2 -m brgm_pyro.cli reconstruct-dataset`` (gloo) against one plain process,
    posterior included: every PNG is the same file, every posterior draw the same number, every metric and
    seed the same."""
    import arviz as az

    inputs = _write_inputs(tmp_path / "in", 5)
    one, two = tmp_path / "one", tmp_path / "two"
    _run(job(inputs, one, 1, steps=5, samples=3))
    printed = _run(job(inputs, two, 2, steps=5, samples=3)).stdout
    assert printed.count("brgm: 5 image(s) reconstructed now") == 1  # rank 0 alone reports
    by_image = [{r["image"]: r for r in _records(out)} for out in (one, two)]
    assert {r["rank"] for r in by_image[1].values()} == {0, 1}
    assert sorted(by_image[0]) == sorted(by_image[1]) == list_images(inputs)
    for image, record in by_image[0].items():
        other = by_image[1][image]
        assert {k: v for k, v in record.items() if k not in PROVENANCE} == {
            k: v for k, v in other.items() if k not in PROVENANCE
        }
        for kind, name in record["outputs"].items():
            if kind == "posterior":
                first, second = az.from_netcdf(one / name), az.from_netcdf(two / name)
                assert first.posterior["image"].values.tobytes() == second.posterior["image"].values.tobytes()
            else:
                assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert read_manifest(two).problems(two) == []


@pytest.mark.slow
def test_a_run_killed_midway_resumes_with_every_image_done_exactly_once(tmp_path, job, generator_file):
    """SIGKILL one rank of a 2-process torchrun run of ``brgm reconstruct-dataset`` once it has finished an
    image, rerun the same command:
    every image is done exactly once, the images done before the kill keep their files, no temporary file is
    left, the manifest is consistent and the outputs are those of an uninterrupted run."""
    inputs = _write_inputs(tmp_path / "in", 14)
    before = _snapshot(inputs)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(job(inputs, out, 2, steps=25), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _done(out):
            assert first.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.02)
        os.kill(_done(out)[0]["pid"], signal.SIGKILL)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert first.returncode != 0
    killed = _records(out)
    early = {r["image"] for r in killed if r["status"] == "done"}
    assert 0 < len(early) < 14
    kept = _snapshot(out / "images")
    assert all(stale.name.startswith(".") for stale in io.stale_temporaries(out))

    _run(job(inputs, out, 2, steps=25))
    records = _records(out)
    done = [r["image"] for r in records if r["status"] == "done"]
    assert sorted(done) == list_images(inputs)  # each exactly once
    first_attempt = killed[0]["attempt"]
    assert {r["attempt"] for r in records if r["image"] in early} == {first_attempt}
    for record in records:
        if record["image"] in early:
            for name in record["outputs"].values():
                path = out / name
                assert kept[path] == (path.read_bytes(), path.stat().st_mtime_ns), f"{name} was written again"
    manifest = read_manifest(out)
    assert manifest.problems(out) == [] and manifest.counts() == {"done": 14, "failed": 0, "pending": 0}
    assert len(manifest.attempts) == 2 and io.stale_temporaries(out) == []
    assert _snapshot(inputs) == before

    reference = tmp_path / "reference"
    _reconstruct(inputs, reference, generator_file, steps=25, batch_size=2)
    for record in records:
        for name in record["outputs"].values():
            assert (reference / name).read_bytes() == (out / name).read_bytes(), name


def test_changed_settings_are_refused_and_force_redoes_every_image(tmp_path, generator_file):
    inputs = _write_inputs(tmp_path / "in", 3)
    out = tmp_path / "out"
    first = _reconstruct(inputs, out, generator_file, steps=3)
    assert (first.done, first.skipped, first.failed) == (3, 0, 0)
    again = _reconstruct(inputs, out, generator_file, steps=3, batch_size=1)
    assert (again.done, again.skipped) == (0, 3)
    written = _snapshot(out)
    with pytest.raises(InputError, match=r"other settings \(schedule.steps: 3 -> 4\); write to a new output folder"):
        _reconstruct(inputs, out, generator_file, steps=4)
    assert _snapshot(out) == written
    forced = _reconstruct(inputs, out, generator_file, steps=4, force=True)
    assert (forced.done, forced.skipped) == (3, 0)
    manifest = read_manifest(out)
    assert manifest.settings["schedule"]["steps"] == 4 and len(manifest.attempts) == 1
    assert manifest.problems(out) == []

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("a user's file")
    with pytest.raises(InputError, match="is not empty and holds no brgm data-set run"):
        _reconstruct(inputs, tmp_path / "other", generator_file)
    for overlapping in (inputs / "out", inputs, tmp_path):
        with pytest.raises(InputError, match="overlap"):
            _reconstruct(inputs, overlapping, generator_file)
    with pytest.raises(InputError, match="holds no images"):
        _reconstruct(tmp_path / "other", tmp_path / "empty-run", generator_file)
    assert (tmp_path / "other" / "mine.txt").read_text() == "a user's file"


def test_bad_images_are_recorded_as_failed_and_the_run_goes_on(tmp_path, generator_file):
    inputs = _write_inputs(tmp_path / "in", 3)
    (inputs / "broken.png").write_bytes(b"not a png")
    io.write_image(inputs / "large.png", torch.rand(1, 16, 16))
    io.write_image(inputs / "twin.png", torch.rand(1, 8, 8))
    io.write_image(inputs / "twin.jpg.png", torch.rand(1, 8, 8))
    (inputs / "twin.bmp").write_bytes((inputs / "twin.png").read_bytes())
    before = _snapshot(inputs)
    out = tmp_path / "out"
    run = _reconstruct(inputs, out, generator_file, batch_size=3)
    assert (run.done, run.failed) == (4, 4)
    manifest = read_manifest(out)
    reasons = {image: r.get("reason") for image, r in manifest.images.items() if r["status"] == "failed"}
    assert reasons.keys() == {"broken.png", "large.png", "twin.png", "twin.bmp"}
    assert "is not an image file that can be read" in reasons["broken.png"]
    assert "large.png is 16x16 pixels, but this task needs 8x8 inputs" in reasons["large.png"]
    assert "twin.png and twin.bmp would write outputs of the same name" in reasons["twin.png"]
    assert manifest.status("twin.jpg.png") == "done" and manifest.problems(out) == []
    assert _snapshot(inputs) == before

    (inputs / "broken.png").unlink()
    io.write_image(inputs / "broken.png", torch.rand(1, 8, 8))  # the user fixes one file and reruns
    rerun = _reconstruct(inputs, out, generator_file, batch_size=3)
    assert (rerun.done, rerun.skipped, rerun.failed) == (1, 4, 3)
    assert read_manifest(out).counts() == {"done": 5, "failed": 3, "pending": 0}


def test_a_posterior_run_writes_the_std_map_and_netcdf_per_image(tmp_path, generator_file):
    import arviz as az

    inputs = _write_inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    request = PosteriorRequest("svi", 3, options={"guide": "normal", "steps": 3})
    run = _reconstruct(inputs, out, generator_file, posterior=request)
    record = run.manifest.images["im01.png"]
    assert record["outputs"]["std"] == "images/im01_std.png" and record["seed"] == image_seed(0, "im01.png")
    std = io.read_image(out / record["outputs"]["std"])
    assert std.shape == (3, 16, 16) and std.std() > 0
    data = az.from_netcdf(out / record["outputs"]["posterior"])
    assert data.posterior["image"].shape == (1, 3, 1, 1, 16, 16)
    assert record["metrics"]["posterior"]["std_vmax"] == pytest.approx(record["metrics"]["posterior"]["max_std"])
    with pytest.raises(InputError, match="Unknown posterior method"):
        PosteriorRequest("gibbs")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_workers_whose_launcher_is_killed_stop_and_free_the_output_folder(tmp_path, job, generator_file, capsys):
    """kill -9 of the torchrun launcher alone: while its workers live, a rerun into the folder is refused with the
    run's pid; they stop at once (their work would take minutes), and the rerun is then accepted."""
    inputs = _write_inputs(tmp_path / "in", 8)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(job(inputs, out, 2, steps=200_000), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    workers = []
    try:
        deadline = time.monotonic() + 240
        # Each rank opens its record file once it holds the folder.
        while len(list((out / RECORDS_DIR).glob("*.jsonl"))) < 2:
            assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
        workers = _children(launcher.pid)
        assert len(workers) == 2
        rerun = ["reconstruct-dataset", str(inputs), "--out", str(out), "--generator", str(generator_file), "--task",
                 "superres", "--factor", str(FACTOR), "--perceptual", "none", "--steps", "3", "--force", "--quiet"]
        assert main(rerun) == 2
        err = capsys.readouterr().err
        assert f"The output folder {out} is in use by another run (reconstruct-dataset, pid " in err
        assert any(f"pid {pid} on " in err for pid in workers), (err, workers)

        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "the workers outlived their launcher"
            time.sleep(0.05)
    finally:
        for pid in [launcher.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.wait()
    assert main(rerun) == 0, capsys.readouterr().err
    manifest = read_manifest(out)
    assert manifest.counts() == {"done": 8, "failed": 0, "pending": 0} and manifest.problems(out) == []
