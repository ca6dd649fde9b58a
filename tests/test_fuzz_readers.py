"""Hostile files: a seeded run of benchmarks/fuzz_readers.py over every reader ends without a failure, and each
reader the fuzzer broke has its case here, the file written as the fuzzer found it (each failed before its fix
with the exception named in its docstring)."""

import json
import struct
import time
from pathlib import Path

import pytest
import torch
from conftest import load_script, tiny_generator
from foreign_files import random_generator
from safetensors.torch import save_file

import brgm_pyro as bp
from brgm_pyro.card import PriorCard
from brgm_pyro.checkpoints import CheckpointError, load_generator
from brgm_pyro.dataset.manifest import read_manifest
from brgm_pyro.dataset.report import render_report
from brgm_pyro.errors import InputError
from brgm_pyro.uncertainty.conformal import load_calibrations

REPO = Path(__file__).resolve().parent.parent
CI_INPUTS = 20  # mutated inputs per reader here, besides the crafted ones; the benchmark runs thousands


def _benchmark():
    return load_script("benchmarks/fuzz_readers.py")


def test_a_seeded_fuzz_run_over_every_reader_ends_in_results_or_the_projects_errors():
    fuzz = _benchmark()
    rows = fuzz.fuzz(list(fuzz.READERS), CI_INPUTS, seed=0, time_bound=60, memory_bound_mib=1024)
    failures = [f"{f['reader']} {f['kind']}: {f['input']}: {f['message']}" for r in rows for f in r["failures"]]
    assert failures == []
    assert sum(r["inputs"] for r in rows) >= 200 and {r["reader"] for r in rows} == set(fuzz.READERS)
    for row in rows:  # every reader refused something and read something: the mutations reach past the first check
        assert row["counts"]["refused"] > 0 and row["counts"]["result"] > 0, row


# ----------------------------------------------------------------------------- project checkpoints


def _project_file(path, config=None, **metadata):
    G = random_generator(channels=1)
    state = {k: v.contiguous() for k, v in G.state_dict().items()}
    header = {"format": "brgm-pyro-generator/1", "brgm_pyro.config": json.dumps(config or G.config),
              "brgm_pyro.info": "{}", **metadata}
    save_file(state, str(path), metadata=header)
    return path, G.config


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"w_dim": 1 << 20, "z_dim": 1 << 20}, "z_dim 1048576 where its tensors say 16"),  # RuntimeError: 4 TB
        ({"channel_max": 1 << 16, "channel_base": 1 << 30}, "feature maps"),  # RuntimeError: 144 GB
        ({"mapping_layers": 10_000_000}, "mapping_layers 10000000"),  # minutes building ten million layers
        ({"w_dim": 32}, "w_dim 32 where its tensors say 16"),  # RuntimeError: size mismatch in load_state_dict
        ({"fuzz_1": -1}, "'fuzz_1' in its header config"),  # TypeError: unexpected keyword argument
        ({"conv_clamp": "x"}, "conv_clamp = 'x'"),  # accepted, then a TypeError at the first synthesis
    ],
)
def test_a_project_checkpoint_whose_config_is_not_its_tensors_is_refused_before_anything_is_built(
        tmp_path, change, problem):
    G = random_generator(channels=1)
    path, _ = _project_file(tmp_path / "g.safetensors", {**G.config, **change})
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=problem):
        load_generator(path)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    "config, problem",
    [
        ("{resolution: 16", "is not valid JSON"),  # JSONDecodeError
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON .maximum recursion depth"),  # RecursionError
        ('{"resolution": 1' + "0" * 5000 + "}", "is not valid JSON .Exceeds the limit"),  # ValueError (int digits)
        ("[16, 1]", "is not a JSON object"),  # TypeError: argument after ** must be a mapping
    ],
)
def test_a_project_checkpoint_whose_header_is_not_json_is_refused(tmp_path, config, problem):
    path, _ = _project_file(tmp_path / "g.safetensors")
    G = random_generator(channels=1)
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(path),
              metadata={"format": "brgm-pyro-generator/1", "brgm_pyro.config": config})
    with pytest.raises(CheckpointError, match=problem):
        load_generator(path)


def test_a_project_checkpoint_still_loads_as_saved(tmp_path):
    G = tiny_generator(16)
    H = load_generator(bp.save_generator(G, tmp_path / "g.safetensors", info={"data": "x"}))
    assert H.config == G.config and H.info == {"data": "x"}
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), H.state_dict().values()))


# ----------------------------------------------------------------------------- NVIDIA pickles


def test_an_nvidia_pickle_whose_networks_nest_thousands_deep_is_refused(tmp_path):
    """RecursionError in the walk over the sub-networks before the fix."""
    fuzz = _benchmark()
    sentinel = tmp_path / "sentinel"
    deep = [p for p in fuzz.hostile_nvidia(tmp_path, sentinel) if p.name == "deep-modules.pkl"][0]
    with pytest.raises(CheckpointError, match="nests sub-networks more than 16 levels deep"):
        load_generator(deep)
    assert not sentinel.exists()


def test_a_legacy_torch_file_whose_storage_key_names_no_storage_is_refused(tmp_path):
    """torch.load checks the key with an assert: AssertionError before the fix."""
    from foreign_files import write_rosinality

    fuzz = _benchmark()
    path = write_rosinality(random_generator(channels=3), tmp_path / "legacy.pt", legacy=True)
    data = path.read_bytes()
    spans = fuzz._pickle_spans(data)
    keys = [arg for op, arg, _ in fuzz._opcodes(data[slice(*spans[4])]) if op.name == "BINUNICODE"]
    encoded = b"X" + struct.pack("<I", len(keys[0])) + keys[0].encode()
    start, end = spans[3]
    main = data[start:end].replace(encoded, b"X" + struct.pack("<I", len(keys[0])) + b"x" * len(keys[0]), 1)
    path.write_bytes(data[:start] + main + data[end:])
    with pytest.raises(CheckpointError, match="could not be read as a PyTorch checkpoint .AssertionError"):
        load_generator(path)


# ----------------------------------------------------------------------------- JSON readers


HOSTILE_JSON = {
    "not-utf8": b"\xff\xfe{}",  # UnicodeDecodeError
    "deep": b"[" * 100_000 + b"]" * 100_000,  # RecursionError
    "huge-number": b"1" + b"0" * 5000,  # ValueError: Exceeds the limit (4300 digits)
}


@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_a_calibration_file_that_is_not_json_gets_one_sentence(tmp_path, name):
    path = tmp_path / f"{name}.json"
    path.write_bytes(HOSTILE_JSON[name])
    with pytest.raises(InputError, match=rf"The calibration file .*{name}\.json is not valid JSON"):
        load_calibrations(path)


def test_a_calibration_record_with_meaningless_values_is_refused(tmp_path):
    """A NaN multiplier or a level of 1.5 read as a calibration before the fix."""
    card = json.loads((REPO / "brgm_pyro" / "priors" / "fashion-mnist-32.json").read_text())
    record = next(iter(card["calibration"].values()))
    for region in record["scales"]:
        record["scales"][region] = {"1.5": [1.0]}
    (tmp_path / "c.json").write_text(json.dumps({"calibration": {"inpaint": record}}))
    with pytest.raises(InputError, match="a level is not between 0 and 1"):
        load_calibrations(tmp_path / "c.json")


@pytest.mark.parametrize(
    "card, entry",
    [
        ([1, 2], "JSON list, not an object"),  # AttributeError: 'list' object has no attribute 'get'
        (float("nan"), "JSON float, not an object"),  # AttributeError
        ({"params": {"sigma_pixel": 0.1, "fuzz": 1}}, "'params' entry"),  # TypeError: unexpected keyword
        ({"schedule": [150]}, "'schedule' entry"),  # TypeError: argument after ** must be a mapping
        ({"sigma_reach": "0.06x"}, "'params' entry|'sigma_reach' entry"),  # ValueError from float()
        ({"perceptual": {"net": 1}}, "'perceptual' entry"),  # accepted, then refused as an unknown network later
    ],
)
def test_a_damaged_prior_card_gets_one_sentence_naming_its_entry(card, entry):
    class Carded:
        pass

    generator = Carded()
    generator.card = card
    with pytest.raises(InputError, match=entry):
        PriorCard.of(generator)


# ----------------------------------------------------------------------------- data-set runs


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    fuzz = _benchmark()
    (run,) = fuzz.run_folders(tmp_path_factory.mktemp("fuzz-run"))
    return run


def _records(run):
    return sorted((run / "manifest").glob("*.jsonl"))[-1]


@pytest.mark.parametrize(
    "line",
    [
        "[" * 100_000 + "]" * 100_000,  # RecursionError
        "[1, 2, 3]",  # AttributeError: 'list' object has no attribute 'get'
        '{"type": "image", "image": "a.png", "status": "done", "settings_id": "%s"}',  # KeyError: 'outputs'
        '{"type": "image", "image": NaN, "status": "failed", "settings_id": "%s"}',  # TypeError sorting names
        '{"type": "attempt", "images": "a.png", "world_size": 1, "settings_id": "%s"}',  # a string, not a list
        '{"type": "image", "image": "a.png", "status": "done", "outputs": {"input": "../../x.png"}, "settings_id": "%s"}',
    ],
)
def test_a_manifest_line_that_is_not_a_record_is_ignored_and_counted(tmp_path, run_folder, line):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_folder, run)
    before = read_manifest(run)
    settings_id = json.loads((run / "run.json").read_text())["settings_id"]
    records = _records(run)
    records.write_text(records.read_text() + (line % settings_id if "%s" in line else line) + "\n")
    manifest = read_manifest(run)
    assert manifest.torn_lines == before.torn_lines + 1 and manifest.images == before.images
    assert "<table" in render_report(manifest, "run")


def test_an_output_name_too_long_for_the_file_system_counts_as_missing(tmp_path, run_folder):
    """OSError (File name too long) from the check of the outputs before the fix."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_folder, run)
    settings_id = json.loads((run / "run.json").read_text())["settings_id"]
    record = {"type": "image", "image": "long.png", "status": "done", "outputs": {"input": "a" * 300 + ".png"},
              "settings_id": settings_id}
    records = _records(run)
    records.write_text(records.read_text() + json.dumps(record) + "\n")
    assert f"long.png: output {'a' * 300}.png is missing" in read_manifest(run).problems(run)


def test_a_damaged_run_record_gets_one_sentence(tmp_path, run_folder):
    """UnicodeDecodeError and RecursionError before the fix."""
    import shutil

    for name, payload in (("bytes", b"\xff{}"), ("deep", b'{"settings": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
                          ("list", b"[]")):
        run = tmp_path / name
        shutil.copytree(run_folder, run)
        (run / "run.json").write_bytes(payload)
        with pytest.raises(InputError, match="run record|not the record of a brgm data-set run"):
            read_manifest(run)


def test_the_report_shows_hostile_record_values_as_text(run_folder):
    """ValueError formatting a string metric before the fix; a seed holding markup went into the page unescaped.
    (The manifest's reader lets only records of its format through; these fields it leaves to the report.)"""
    manifest = read_manifest(run_folder)
    image = next(iter(manifest.images))
    hostile = "<img src=x onerror=alert(1)>"
    manifest.images[image] = {**manifest.images[image], "seed": hostile,
                              "metrics": {"psnr_y": hostile, "rmse_y": True, "losses": {"total": [1]}}}
    page = render_report(manifest, "run")
    assert "onerror" not in page and "<table" in page


def test_the_fuzzers_crafted_pickles_would_run_code_if_unpickled_plainly(tmp_path):
    """The crafted code runners are real: Python's own unpickler runs them (the readers must not)."""
    import pickle

    fuzz = _benchmark()
    sentinel = tmp_path / "sentinel"
    runner = [p for p in fuzz.hostile_pickles(tmp_path, sentinel, "torch_utils.persistence") if "runs-code-4" in p.name][0]
    pickle.loads(runner.read_bytes())
    assert sentinel.exists()
    sentinel.unlink()
    with pytest.raises(CheckpointError, match="Refused to load"):
        load_generator(runner)
    assert not sentinel.exists()


def test_the_fuzzers_memory_bound_catches_an_allocation(tmp_path):
    """The harness's own checks. A read that holds 300 MiB is a failure under a 100 MiB bound, not under 1 GiB, also
    when this process has just freed a gigabyte it might have kept resident (a child reusing it would not grow)."""
    fuzz = _benchmark()
    freed = torch.ones(2**30 // 4)
    freed += 1
    del freed

    def hold(path):
        block = torch.ones(300 * 2**20 // 4)
        return float(block.sum())

    sentinel = tmp_path / "sentinel"
    assert fuzz.run_input(hold, tmp_path, sentinel, 30, 100).kind == "memory"
    assert fuzz.run_input(hold, tmp_path, sentinel, 30, 1024).kind == "result"
    assert fuzz.run_input(lambda path: time.sleep(5), tmp_path, sentinel, 1, 1024).kind == "hang"
    assert fuzz.run_input(lambda path: sentinel.touch(), tmp_path, sentinel, 30, 1024).kind == "code-run"
    assert fuzz.run_input(lambda path: struct.unpack("<I", b""), tmp_path, sentinel, 30, 1024).kind == "exception"
