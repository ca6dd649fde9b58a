"""Hostile files at scale: seeded mutations of real files through every reader of the project, each input in its own process.

Every input must end in a result or the project's own error (``brgm_pyro.errors.InputError`` and its
subclasses, one sentence), never in another exception, a hang (more than ``--time-bound`` seconds),
code run (a sentinel file that the hostile inputs try to create appears), a crash (a signal), or
memory beyond ``--memory-bound`` MiB of peak resident memory above what the process held when the
input started (a decompression bomb, a pickle that claims a huge tensor, deep nesting).

    python benchmarks/fuzz_readers.py [--inputs 500] [--seed 0] [--readers image,mask] [--json fuzz.json] [--keep DIR]

The seeds are real files: the project's own outputs (generators saved by ``save_generator`` and the
shipped priors, PNGs written by ``io.write_image``, masks, calibration files written by
``save_calibration``, a data-set run's folder written by ``reconstruct_dataset``, the shipped cards),
files written by real libraries (Pillow's palette, 16-bit, alpha and 1-bit PNGs), and the foreign
checkpoints of ``tests/foreign_files/`` (NVIDIA PyTorch and TensorFlow pickles, rosinality's zip and
legacy ``torch.save`` files). Each input is one seed changed by one to three seeded mutations that
know its format where that helps the change get past the first check: a JSON tree node replaced (a
4301-digit number, ``1e400``, NaN, 100,000 levels of nesting, HTML, another type), a PNG chunk changed
with its CRC fixed or its pixels changed before recompression, a pickle opcode's argument changed, an
opcode deleted or repeated, or a call of ``os.system`` and its kin inserted, a zip member changed, a
safetensors header changed; or plain byte flips, cuts and splices. Each reader also gets its crafted
inputs (``hostile``): decompression bombs, pickles that run code or claim a 2**40-byte storage, deep
nesting. The same ``--seed`` gives the same inputs.

Each input runs in a child forked from this process (the readers' modules imported once), under an
address-space limit (``--memory-bound`` plus 4 GiB over the parent's) so that a runaway allocation
fails instead of taking the machine; the peak is ``ru_maxrss`` of the child (``os.wait4``) less its
``ru_maxrss`` at the start, which Linux sets to the resident size at the fork (the parent hands its
freed memory back to the system first, ``malloc_trim``, so that a child cannot reuse it unseen).

Adding a reader is one line in :data:`READERS`: ``"name": Reader(read, seeds, family, hostile)``, where
``read(path)`` is the project's reader, ``seeds(folder)`` writes real files for it, ``family`` picks
the format-aware mutations (one of :data:`MUTATIONS`) and ``hostile(folder, sentinel)`` (optional)
writes crafted inputs.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import datetime
import functools
import json
import os
import pickle
import pickletools
import platform
import random
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import types
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import brgm_pyro as bp
from brgm_pyro import io
from brgm_pyro.card import PriorCard
from brgm_pyro.checkpoints import PRIORS_DIR, load_generator
from brgm_pyro.dataset.manifest import read_manifest
from brgm_pyro.dataset.report import render_report
from brgm_pyro.dataset.run import reconstruct_dataset
from brgm_pyro.demo import EXAMPLES_DIR
from brgm_pyro.errors import InputError
from brgm_pyro.forward.free_form import free_form_mask
from brgm_pyro.search.bank import PriorBank
from brgm_pyro.uncertainty.conformal import load_calibrations, read_calibrations, save_calibration

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
import foreign_files  # noqa: E402  (the real-format fixtures of tests/)

OUTCOMES = ("result", "refused")
FAILURES = ("exception", "hang", "memory", "code-run", "crash")
HEADROOM = 4 << 30  # the address-space limit over the parent's, beyond the memory bound
_LIBC = ctypes.CDLL(None)  # glibc's malloc_trim


# ----------------------------------------------------------------------------- the readers


def read_card(path: Path) -> PriorCard:
    """A prior's card as the loader reads one (``checkpoints.prior_card``), then its defaults (``PriorCard.of``)."""
    card = io.read_json(path, "prior card", "give the card shipped with the prior.")
    return PriorCard.of(types.SimpleNamespace(card=card))


def read_run(folder: Path) -> str:
    """A data-set run's folder as ``brgm report`` reads it: the merged manifest, its checks, the page."""
    manifest = read_manifest(folder)
    manifest.counts()
    manifest.problems(folder)
    return render_report(manifest, folder.name)


# ----------------------------------------------------------------------------- seed files


def _tiny_generator(seed: int = 1, channels: int = 1) -> bp.StyleGAN2Generator:
    return foreign_files.random_generator(channels=channels, seed=seed)


_BANK_PRIOR: list[bp.StyleGAN2Generator] = []


def _bank_prior() -> bp.StyleGAN2Generator:
    """The tiny generator whose banks the bank reader opens (made once per process)."""
    if not _BANK_PRIOR:
        _BANK_PRIOR.append(_tiny_generator(seed=5))
    return _BANK_PRIOR[0]


def read_bank(path: Path) -> PriorBank:
    """A prior bank of the mode search's cache as the search opens it (``PriorBank.open``: its header, its
    shapes, its prior's fingerprint, a scan of its values)."""
    return PriorBank.open(path, _bank_prior())


def bank_files(folder: Path) -> list[Path]:
    """Banks of 64 and 200 draws of the tiny generator, written by ``PriorBank.build``."""
    paths = []
    for size in (64, 200):
        PriorBank.build(_bank_prior(), size, folder / f"bank-{size}.safetensors")
        paths.append(folder / f"bank-{size}.safetensors")
    return paths


def hostile_banks(folder: Path, sentinel: Path) -> list[Path]:
    """A bank of another prior, and banks whose header claims 2**40 draws, a 2**20-pixel image or a
    size that is not a number, over tensors of 8 draws."""
    from safetensors.torch import load_file, save_file

    other = folder / "other-prior.safetensors"
    PriorBank.build(_tiny_generator(seed=6), 8, other)
    PriorBank.build(_bank_prior(), 8, folder / "small.safetensors")
    tensors = load_file(str(folder / "small.safetensors"))
    with open(folder / "small.safetensors", "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    paths = [other]
    for name, change in (("claims-2e40", {"size": str(2**40)}), ("claims-huge-image", {"resolution": str(2**20)}),
                         ("size-nan", {"size": "nan"})):
        save_file(tensors, str(folder / f"{name}.safetensors"), metadata={**header["__metadata__"], **change})
        paths.append(folder / f"{name}.safetensors")
    return paths


def project_checkpoints(folder: Path) -> list[Path]:
    paths = [bp.save_generator(_tiny_generator(1, c), folder / f"tiny-{c}.safetensors", info={"data": "fuzz"})
             for c in (1, 3)]
    return [*paths, PRIORS_DIR / "fashion-mnist-32.safetensors"]


def nvidia_pickles(folder: Path, sentinel: Path) -> list[Path]:
    G = _tiny_generator(2, 3)
    return [foreign_files.write_nvidia_pickle(G, folder / f"{layout}.pkl", sentinel, layout=layout)
            for layout in ("stylegan2-ada-pytorch", "stylegan3")]


def tensorflow_pickles(folder: Path, sentinel: Path) -> list[Path]:
    G = _tiny_generator(3, 3)
    return [foreign_files.write_tf_pickle(G, folder / f"{release}.pkl", sentinel, release=release)
            for release in ("stylegan2", "stylegan2-ada")]


def rosinality_files(folder: Path) -> list[Path]:
    G = _tiny_generator(4, 3)
    return [foreign_files.write_rosinality(G, folder / f"{writer}-{'legacy' if legacy else 'zip'}.pt", writer, legacy)
            for writer, legacy in (("convert_weight", False), ("train", False), ("convert_weight", True))]


def image_files(folder: Path) -> list[Path]:
    """The shipped examples and the project's own PNGs, and Pillow's other kinds of PNG."""
    paths = sorted(EXAMPLES_DIR.glob("*.png"))[:3]
    picture = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    paths.append(io.write_image(folder / "rgb.png", picture))
    paths.append(io.save_grid(folder / "grid.png", [[picture, picture[:1]]], scale=2))
    gray = (np.asarray(Image.open(paths[0]).convert("L")))
    kinds = {"palette-grey": Image.fromarray(gray).convert("P"),
             "palette-colour": Image.fromarray((picture.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).convert("P"),
             "deep": Image.fromarray(gray.astype(np.uint16) * 257),
             "opaque-rgba": Image.fromarray(gray).convert("RGBA"), "opaque-la": Image.fromarray(gray).convert("LA"),
             "bilevel": Image.fromarray(gray).convert("1")}
    for name, image in kinds.items():
        image.save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


def mask_files(folder: Path) -> list[Path]:
    masks = {"box": bp.forward.Mask.center_box(32, 16).mask, "half": bp.forward.Mask.half(32, side="right").mask,
             **{f"free-{seed}": free_form_mask(32, seed=seed).mask for seed in (1, 2)}}
    return [io.write_image(folder / f"{name}.png", mask.reshape(32, 32)) for name, mask in masks.items()]


def calibration_files(folder: Path) -> list[Path]:
    """One file per calibration of the embedded prior's card and one with all of them, written by save_calibration."""
    calibrations = read_calibrations(io.read_json(PRIORS_DIR / "fashion-mnist-32.json", "card", ""))
    paths = [save_calibration(folder / f"{task}.json", calibration) for task, calibration in calibrations.items()]
    for calibration in calibrations.values():
        save_calibration(folder / "all.json", calibration)
    return [*paths, folder / "all.json"]


def run_folders(folder: Path) -> list[Path]:
    """A data-set run of a tiny generator: four inputs, one of them not an image, one in a subfolder."""
    G = _tiny_generator(5, 1)
    inputs = folder / "inputs"
    (inputs / "sub").mkdir(parents=True)
    low = bp.forward.Downsample(2)(G.sample(3, seed=1)).clamp(0, 1)
    for i, name in enumerate(["a.png", "<b>.png", "sub/c.png"]):
        io.write_image(inputs / name, low[i])
    (inputs / "broken.png").write_bytes(b"not a picture")
    run = folder / "run"
    reconstruct_dataset(inputs, run, bp.forward.Downsample(2), G, perceptual=None, schedule=bp.MAPSchedule(steps=2),
                        progress=False)
    return [run]


def card_files(folder: Path) -> list[Path]:
    return sorted(PRIORS_DIR.glob("*.json"))


# ----------------------------------------------------------------------------- crafted hostile inputs


def _png(width: int, height: int, rows: Any, level: int = 1) -> bytes:
    """An 8-bit grayscale PNG with this header whose compressed pixel stream is ``rows`` (filtered scan lines)."""
    compressor = zlib.compressobj(level)
    stream = b"".join(compressor.compress(row) for row in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def hostile_images(folder: Path, sentinel: Path) -> list[Path]:
    """A 14000 x 14000 decompression bomb (1 MB, 196 M pixels), a header claiming 5000 x 5000 over a short
    stream, a 4096 x 4096 image (the bound), a TIFF claiming 100000 x 100000, a transparent and a grey image."""
    files = {
        "bomb.png": _png(14000, 14000, (bytes(14001 * 100) for _ in range(140))),
        "claims-5000.png": _png(5000, 5000, [bytes(5001)] * 4),
        "bound-4096.png": _png(4096, 4096, (bytes(4097) for _ in range(4096))),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    tiff = folder / "claims.tiff"
    Image.new("L", (4, 4)).save(tiff)
    payload = bytearray(tiff.read_bytes())
    for width_tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG entries of the first IFD
        at = payload.find(struct.pack("<HH", width_tag, 3)) if payload[:2] == b"II" else -1
        if at >= 0:
            payload[at + 2 : at + 12] = struct.pack("<HHII", 4, 1, 100000, 0)[:10]
    tiff.write_bytes(bytes(payload))
    transparent = np.full((8, 8, 4), 255, np.uint8)
    transparent[:4, :4, 3] = 0
    Image.fromarray(transparent, "RGBA").save(folder / "transparent.png")
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(folder / "grey.png")
    return [folder / name for name in (*files, "claims.tiff", "transparent.png", "grey.png")]


class _Call:
    """Pickles as a call of ``function(*args)``: what a hostile pickle runs when its global is resolved."""

    def __init__(self, function: Callable, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return self.function, self.args


def _code_runners(sentinel: Path) -> list[Any]:
    """Calls that create ``sentinel`` if anything runs them."""
    import builtins
    import subprocess

    return [_Call(os.system, f"touch {sentinel}"), _Call(builtins.exec, f"open({str(sentinel)!r}, 'w')"),
            _Call(builtins.eval, f"open({str(sentinel)!r}, 'w')"), _Call(subprocess.call, ["touch", str(sentinel)]),
            _Call(builtins.open, str(sentinel), "w")]


def _nested_list_pickle(depth: int, marker: str) -> bytes:
    """A pickle of ``depth`` nested lists after a string that makes the sniffer take it for ``marker``'s format."""
    text = marker.encode()
    head = b"\x80\x02X" + struct.pack("<I", len(text)) + text + b"0"  # the marker string, popped
    return head + b"]" * depth + b"a" * (depth - 1) + b"."


def _claim_storage(data: bytes, numel: int) -> bytes:
    """``torch.save`` output (a legacy stream of pickles, or a zip's data.pkl) whose first storage record,
    ('storage', type, key, 'cpu', numel), claims ``numel`` elements instead."""
    for start, end in _pickle_spans(data):
        ops = _opcodes(data[start:end])
        for i, (op, arg, _) in enumerate(ops):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE") and arg == "cpu":
                j = next(k for k in range(i + 1, len(ops)) if "INT" in ops[k][0].name)
                return data[: start + ops[j][2]] + _long1(numel) + data[start + ops[j + 1][2] :]
    raise ValueError("no storage record in this torch.save output")


def _legacy_storage_claiming(numel: int) -> bytes:
    """``torch.save``'s legacy format of a 4-float tensor whose storage record claims ``numel`` elements."""
    buffer = BytesIO()
    torch.save(torch.zeros(4), buffer, _use_new_zipfile_serialization=False)
    return _claim_storage(buffer.getvalue(), numel)


def hostile_pickles(folder: Path, sentinel: Path, marker: str) -> list[Path]:
    """Pickles that the sniffer takes for ``marker``'s format: code runners, 2**40-element tensors, deep nesting."""
    paths = []
    for i, call in enumerate(_code_runners(sentinel)):
        paths.append(folder / f"runs-code-{i}.pkl")
        paths[-1].write_bytes(pickle.dumps({"format": marker, "G_ema": call}, protocol=2))
    huge = _legacy_storage_claiming(1 << 40)  # a tensor storage that claims 2**40 floats
    paths.append(folder / "claims-storage.pkl")
    paths[-1].write_bytes(b"\x80\x02" + _unicode(marker) + b"0ctorch.storage\n_load_from_bytes\nB"
                          + struct.pack("<I", len(huge)) + huge + b"\x85R.")
    paths.append(folder / "deep-lists.pkl")
    paths[-1].write_bytes(_nested_list_pickle(200_000, marker))
    return paths


def hostile_nvidia(folder: Path, sentinel: Path) -> list[Path]:
    paths = hostile_pickles(folder, sentinel, "torch_utils.persistence")
    G = _tiny_generator(2, 3)
    source = foreign_files.nvidia_source(sentinel)
    nested = foreign_files.nvidia_generator(G, source)
    deep = nested.state["_modules"]["mapping"]
    for _ in range(3000):  # a generator whose mapping network nests 3000 levels of sub-networks
        deep.state["_modules"]["fc0"] = foreign_files.nvidia.Persistent(
            "MappingNetwork", source, {"_modules": {"fc0": None}})
        deep = deep.state["_modules"]["fc0"]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)  # the fixtures' pickler is Python's own, recursive
    try:
        paths.append(foreign_files.write_nvidia_pickle(G, folder / "deep-modules.pkl", sentinel, G_ema=nested))
    finally:
        sys.setrecursionlimit(limit)
    return paths


def hostile_tensorflow(folder: Path, sentinel: Path) -> list[Path]:
    return hostile_pickles(folder, sentinel, "dnnlib.tflib.network")


def hostile_rosinality(folder: Path, sentinel: Path) -> list[Path]:
    paths = []
    for legacy in (False, True):
        for i, call in enumerate(_code_runners(sentinel)[:2]):
            path = folder / f"runs-code-{i}-{'legacy' if legacy else 'zip'}.pt"
            torch.save({"g_ema": {"x": torch.zeros(1)}, "args": call}, path, _use_new_zipfile_serialization=not legacy)
            paths.append(path)
    G = _tiny_generator(4, 3)
    legacy = foreign_files.write_rosinality(G, folder / "claims-legacy.pt", legacy=True)
    legacy.write_bytes(_claim_storage(legacy.read_bytes(), 1 << 40))
    zipped = foreign_files.write_rosinality(G, folder / "claims-zip.pt")
    claim = lambda name, data: _claim_storage(data, 1 << 40) if name.endswith("data.pkl") else data  # noqa: E731
    return [*paths, legacy, _rewrite_zip(zipped, zipped, claim)]


def hostile_project(folder: Path, sentinel: Path) -> list[Path]:
    """Project checkpoints whose header claims a huge generator, a config that is not JSON, deep JSON."""
    from safetensors.torch import save_file

    G = _tiny_generator(1, 1)
    state = {k: v.contiguous() for k, v in G.state_dict().items()}
    configs = {
        "huge-width": json.dumps({**G.config, "w_dim": 1 << 20, "z_dim": 1 << 20}),
        "huge-channels": json.dumps({**G.config, "channel_max": 1 << 16, "channel_base": 1 << 30}),
        "many-layers": json.dumps({**G.config, "mapping_layers": 10_000_000}),
        "not-json": "{resolution: 16",
        "deep": "[" * 100_000 + "]" * 100_000,
        "list": json.dumps([16, 1]),
        "huge-number": '{"resolution": 1' + "0" * 5000 + "}",
    }
    paths = []
    for name, config in configs.items():
        path = folder / f"{name}.safetensors"
        save_file(state, str(path), metadata={"format": "brgm-pyro-generator/1", "brgm_pyro.config": config,
                                              "brgm_pyro.info": "{}"})
        paths.append(path)
    return paths


def hostile_json(folder: Path, sentinel: Path) -> list[Path]:
    documents = {"deep.json": "[" * 100_000 + "]" * 100_000, "huge-number.json": "1" + "0" * 5000,
                 "list.json": "[1, 2]", "nan.json": "NaN", "not-utf8.json": b"\xff\xfe{}",
                 "empty.json": "", "html.json": json.dumps({"<script>": "</script>"})}
    paths = []
    for name, text in documents.items():
        paths.append(folder / name)
        paths[-1].write_bytes(text if isinstance(text, bytes) else text.encode())
    return paths


def hostile_manifests(folder: Path, sentinel: Path) -> list[Path]:
    """Copies of a run folder with one hostile record line or run.json each."""
    (seed,) = run_folders(folder / "seed")
    lines = {"deep-line": "[" * 100_000 + "]" * 100_000, "huge-number": '{"seed": 1' + "0" * 5000 + "}",
             "html-status": json.dumps({"type": "image", "image": "a.png", "status": "<img src=x onerror=alert(1)>",
                                        "settings_id": json.loads((seed / "run.json").read_text())["settings_id"]}),
             "not-a-record": "[1, 2, 3]", "string-metrics": None}
    paths = []
    for name, line in lines.items():
        copy = folder / name
        shutil.copytree(seed, copy)
        records = sorted((copy / "manifest").glob("*.jsonl"))[-1]
        if line is None:  # every record's metrics and seed made strings
            text = "".join(json.dumps({**r, "metrics": {"psnr_y": "x"}, "seed": "<b>"}) + "\n"
                           for r in map(json.loads, records.read_text().splitlines()))
            records.write_text(text)
        else:
            records.write_text(records.read_text() + line + "\n")
        paths.append(copy)
    copy = folder / "deep-run-json"
    shutil.copytree(seed, copy)
    (copy / "run.json").write_text('{"settings": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return [*paths, copy]


# ----------------------------------------------------------------------------- mutations


@dataclass(frozen=True)
class Mutated:
    data: bytes
    how: str


_INTERESTING_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01)
_INTERESTING_INTS = (0, -1, 1, 2, 255, 256, 65535, 2**31 - 1, 2**32, 2**40, 2**62, -(2**31), 10**12)
_HOSTILE_NAMES = ("os", "system", "posix", "builtins", "eval", "exec", "subprocess", "Popen", "__import__",
                  "torch", "load", "numpy", "<img src=x onerror=alert(1)>", "", "a" * 10_000)
_RAW_JSON = ("1" + "0" * 5000, "1e400", "-1e400", "NaN", "Infinity", "-1", "0", "2.5", "1e-320", '""',
             json.dumps("<img src=x onerror=alert(1)>"), "null", "true", "[]", "{}", "[" * 50_000 + "]" * 50_000,
             json.dumps("a" * 100_000), '{"__proto__": {}}', "[[1, 2], [3]]", json.dumps("../../etc/passwd"))


def bytes_mutation(data: bytes, rng: random.Random) -> Mutated:
    """A plain change of the bytes: bit flips, interesting bytes, a cut, an inserted, deleted or repeated run."""
    data = bytearray(data)
    kind = rng.choice(("flip", "byte", "cut", "insert", "delete", "repeat", "length"))
    if not data:
        kind = "insert"
    at = rng.randrange(len(data)) if data else 0
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        data[at] = rng.choice(_INTERESTING_BYTES)
    elif kind == "cut":
        del data[at:]
    elif kind == "insert":
        data[at:at] = rng.randbytes(rng.randint(1, 64))
    elif kind == "delete":
        del data[at : at + rng.randint(1, 64)]
    elif kind == "repeat":
        data[at:at] = data[at : at + rng.randint(1, 256)] * rng.randint(2, 64)
    else:  # a length field made huge: 4 or 8 bytes of a large number
        data[at : at + 8] = struct.pack(rng.choice(("<Q", ">Q")), rng.choice(_INTERESTING_INTS) % 2**64)
    return Mutated(bytes(data), f"bytes:{kind}@{at}")


def json_mutation(data: bytes, rng: random.Random) -> Mutated:
    """A node of the JSON tree replaced, deleted or added (JSON lines: one line's tree)."""
    try:
        lines, index = [data], 0
        document = json.loads(data)
    except (ValueError, RecursionError):
        lines = data.split(b"\n")
        candidates = [i for i, line in enumerate(lines) if line.strip()]
        if not candidates:
            return bytes_mutation(data, rng)
        index = rng.choice(candidates)
        try:
            document = json.loads(lines[index])
        except (ValueError, RecursionError):
            return bytes_mutation(data, rng)
    nodes: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            nodes.append((node, key))
            walk(child)

    walk(document)
    placeholder = f"__fuzz_{rng.getrandbits(32)}__"
    raw = rng.choice(_RAW_JSON)
    if not nodes:
        document, how = placeholder, "root"
    else:
        parent, key = rng.choice(nodes)
        action = rng.choice(("replace", "replace", "replace", "delete", "add", "swap"))
        how = f"{action}:{key!s:.40}"
        if action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[f"fuzz_{rng.getrandbits(16)}"] = placeholder
        elif action == "add":
            parent.append(placeholder)
        elif action == "swap":
            other_parent, other_key = rng.choice(nodes)
            parent[key] = copy.deepcopy(other_parent[other_key])  # a copy: an ancestor would make a cycle
        else:
            parent[key] = placeholder
    text = json.dumps(document).replace(json.dumps(placeholder), raw)
    lines[index] = text.encode()
    return Mutated(b"\n".join(lines), f"json:{how}={raw[:20]}")


def png_mutation(data: bytes, rng: random.Random) -> Mutated:
    """A PNG chunk changed with its CRC recomputed (header fields, pixels before compression, a dropped,
    repeated or added chunk), so that the change reaches the decoder."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return bytes_mutation(data, rng)
    chunks, at = [], 8
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append([data[at + 4 : at + 8], data[at + 8 : at + 8 + length]])
        at += 12 + length
    kind = rng.choice(("header", "header", "pixels", "pixels", "drop", "repeat", "transparency", "text"))
    names = [c[0] for c in chunks]
    if kind == "header" and b"IHDR" in names:
        header = bytearray(chunks[names.index(b"IHDR")][1])
        field = rng.choice(("width", "height", "depth", "colour", "interlace"))
        if field in ("width", "height"):
            value = rng.choice((0, 1, 2, 4097, 65535, 2**31 - 1, rng.randint(1, 100)))
            header[0 if field == "width" else 4 : 4 if field == "width" else 8] = struct.pack(">I", value)
        else:
            offset = {"depth": 8, "colour": 9, "interlace": 12}[field]
            header[offset] = rng.choice({"depth": (1, 2, 4, 8, 16, 3), "colour": (0, 2, 3, 4, 6, 5),
                                         "interlace": (0, 1, 2)}[field])
        chunks[names.index(b"IHDR")][1] = bytes(header)
        how = f"png:IHDR.{field}"
    elif kind == "pixels" and b"IDAT" in names:
        stream = b"".join(c[1] for c in chunks if c[0] == b"IDAT")
        try:
            pixels = zlib.decompress(stream)
        except zlib.error:
            return bytes_mutation(data, rng)
        changed = bytes_mutation(pixels, rng).data if rng.random() < 0.5 else bytes(
            b if rng.random() > 0.05 else rng.randrange(256) for b in pixels)
        first = names.index(b"IDAT")
        chunks = [c for c in chunks if c[0] != b"IDAT"]
        chunks.insert(first, [b"IDAT", zlib.compress(changed)])
        how = "png:pixels"
    elif kind == "drop" and len(chunks) > 1:
        i = rng.randrange(len(chunks))
        how = f"png:drop-{chunks[i][0].decode('latin-1')}"
        del chunks[i]
    elif kind == "repeat" and chunks:
        i = rng.randrange(len(chunks))
        chunks.insert(i, list(chunks[i]))
        how = f"png:repeat-{chunks[i][0].decode('latin-1')}"
    elif kind == "transparency":
        chunks.insert(max(1, len(chunks) - 2), [b"tRNS", rng.randbytes(rng.choice((1, 2, 6, 256)))])
        how = "png:tRNS"
    else:
        text = zlib.compress(b"\0" * rng.choice((1 << 10, 1 << 24)))
        chunks.insert(1, [b"zTXt", b"Comment\0\0" + text])
        how = "png:zTXt"
    out = b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(kind, body) for kind, body in chunks)
    return Mutated(out, how)


@functools.lru_cache(maxsize=32)
def _opcodes(data: bytes) -> tuple:
    """``pickletools.genops`` of one pickle, kept for the seeds that are mutated again and again."""
    return tuple(pickletools.genops(data))


@functools.lru_cache(maxsize=32)
def _pickle_spans(data: bytes) -> tuple[tuple[int, int], ...]:
    """The (start, end) of each pickle in a concatenation of pickles (torch's legacy format has five)."""
    spans, start = [], 0
    while start < len(data):
        try:
            end = start + _opcodes(data[start:])[-1][2] + 1
        except Exception:  # noqa: BLE001 - the rest is not a pickle (raw storage bytes)
            break
        spans.append((start, end))
        start = end
    return tuple(spans)


def _long1(value: int) -> bytes:
    encoded = pickle.encode_long(value)
    return b"\x8a" + bytes([len(encoded)]) + encoded


def _unicode(text: str) -> bytes:
    encoded = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def pickle_mutation(data: bytes, rng: random.Random, sentinel: Path | None = None) -> Mutated:
    """One opcode of one pickle changed: an integer or string argument replaced, nested bytes mutated, the
    opcode deleted or repeated, or a call of os.system (or kin) inserted before it. FRAME opcodes are dropped
    (framing is optional), so that changed lengths stay consistent."""
    spans = _pickle_spans(data)
    if not spans:
        return bytes_mutation(data, rng)
    start, end = rng.choice(spans)
    ops = _opcodes(data[start:end])
    slices = [data[start + pos : start + (ops[i + 1][2] if i + 1 < len(ops) else end - start)]
              for i, (_, _, pos) in enumerate(ops)]
    keep = [i for i, (op, _, _) in enumerate(ops) if op.name != "FRAME"]
    i = rng.choice(keep[:-1] or keep)
    keep = set(keep)
    op, arg, _ = ops[i]
    kind = rng.choice(("argument", "argument", "argument", "delete", "repeat", "code"))
    if kind == "code" and sentinel is not None:
        module, name, argument = rng.choice((("posix", "system", f"touch {sentinel}"), ("os", "system", f"touch {sentinel}"),
                                             ("builtins", "exec", f"open({str(sentinel)!r}, 'w')"),
                                             ("builtins", "eval", f"open({str(sentinel)!r}, 'w')"),
                                             ("subprocess", "getoutput", f"touch {sentinel}")))
        call = f"c{module}\n{name}\n".encode() + _unicode(argument) + b"\x85R0"  # GLOBAL, arg, TUPLE1, REDUCE, POP
        slices[i] = call + slices[i]
        how = f"pickle:call-{module}.{name}"
    elif kind == "delete":
        slices[i] = b""
        how = f"pickle:delete-{op.name}"
    elif kind == "repeat":
        slices[i] = slices[i] * rng.randint(2, 4)
        how = f"pickle:repeat-{op.name}"
    elif op.name in ("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG"):
        value = rng.choice(_INTERESTING_INTS) if rng.random() < 0.7 else int(arg or 0) + rng.randint(-3, 3)
        slices[i] = _long1(value)
        how = f"pickle:{op.name}={value}"
    elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"):
        strings = [a for o, a, _ in ops if isinstance(a, str)]
        text = rng.choice(_HOSTILE_NAMES) if rng.random() < 0.5 else rng.choice(strings)
        slices[i] = _unicode(text)
        how = f"pickle:{op.name}={text[:20]!r}"
    elif op.name in ("SHORT_BINBYTES", "BINBYTES", "BINBYTES8") and isinstance(arg, bytes):
        inner = pickle_mutation(arg, rng) if arg[:1] == b"\x80" else bytes_mutation(arg, rng)
        slices[i] = b"B" + struct.pack("<I", len(inner.data)) + inner.data
        how = f"pickle:bytes({inner.how})"
    elif op.name == "GLOBAL":
        module, name = rng.choice((("os", "system"), ("builtins", "getattr"), ("torch", "load"),
                                   ("collections", "OrderedDict"), ("numpy", "dtype"), ("torch._utils", "_rebuild_tensor")))
        slices[i] = f"c{module}\n{name}\n".encode()
        how = f"pickle:GLOBAL={module}.{name}"
    else:
        slices[i] = b""
        how = f"pickle:delete-{op.name}"
    body = b"".join(s for j, s in enumerate(slices) if j in keep or j == i)
    return Mutated(data[:start] + body + data[end:], how)


def _rewrite_zip(source: Path, target: Path, change: Callable[[str, bytes], bytes]) -> Path:
    with zipfile.ZipFile(source) as archive:
        members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, change(name, data))
    target.write_bytes(buffer.getvalue())
    return target


def torch_mutation(data: bytes, rng: random.Random, sentinel: Path | None = None) -> Mutated:
    """A zip checkpoint's member changed (its pickle by opcode, the rest by bytes), the zip rewritten with
    valid CRCs; a legacy one by :func:`pickle_mutation` over its five pickles."""
    if not data.startswith(b"PK\x03\x04"):
        return pickle_mutation(data, rng, sentinel)
    try:
        archive = zipfile.ZipFile(BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, ValueError):
        return bytes_mutation(data, rng)
    target = rng.choice([n for n in names if n.endswith("data.pkl")] * 3 + names)
    hows = []

    def change(name: str, member: bytes) -> bytes:
        if name != target:
            return member
        mutated = pickle_mutation(member, rng, sentinel) if name.endswith(".pkl") else bytes_mutation(member, rng)
        hows.append(mutated.how)
        return mutated.data

    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for name in names:
            out.writestr(name, change(name, archive.read(name)))
    return Mutated(buffer.getvalue(), f"zip:{target.rsplit('/', 1)[-1]}:{hows[0] if hows else ''}")


def safetensors_mutation(data: bytes, rng: random.Random) -> Mutated:
    """The safetensors header (JSON: tensor dtypes, shapes, offsets, and the metadata strings, themselves
    JSON) changed by :func:`json_mutation`, its length field rewritten."""
    if len(data) < 8:
        return bytes_mutation(data, rng)
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, RecursionError):
        return bytes_mutation(data, rng)
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}  # an earlier mutation may have changed its type
    inner = [k for k, v in metadata.items() if isinstance(v, str) and v.startswith(("{", "["))]
    if inner and rng.random() < 0.4:
        key = rng.choice(inner)
        changed = json_mutation(metadata[key].encode(), rng)
        metadata[key] = changed.data.decode("utf-8", "replace")
        text, how = json.dumps(header).encode(), f"safetensors:metadata.{key}:{changed.how}"
    else:
        changed = json_mutation(json.dumps(header).encode(), rng)
        text, how = changed.data, f"safetensors:{changed.how}"
    return Mutated(struct.pack("<Q", len(text)) + text + data[8 + length :], how)


MUTATIONS: dict[str, Callable[..., Mutated]] = {
    "bytes": lambda data, rng, sentinel: bytes_mutation(data, rng),
    "json": lambda data, rng, sentinel: json_mutation(data, rng),
    "png": lambda data, rng, sentinel: png_mutation(data, rng),
    "pickle": pickle_mutation,
    "torch": torch_mutation,
    "safetensors": lambda data, rng, sentinel: safetensors_mutation(data, rng),
}


def mutate_file(seed: Path, target: Path, family: str, rng: random.Random, sentinel: Path) -> str:
    """Write to ``target`` the seed changed by one to three mutations (format-aware with probability 0.7);
    a folder seed is copied and one of its files changed. Returns what was done."""
    if seed.is_dir():
        shutil.copytree(seed, target)
        files = sorted(p for p in target.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl"))
        chosen = rng.choice(files)
        how = mutate_file(chosen, chosen, "json", rng, sentinel)
        return f"{chosen.relative_to(target)}:{how}"
    data, hows = seed.read_bytes(), []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        mutation = MUTATIONS[family] if rng.random() < 0.7 else MUTATIONS["bytes"]
        try:
            changed = mutation(data, rng, sentinel)
        except (ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile, struct.error, zlib.error):
            changed = bytes_mutation(data, rng)  # an earlier change left too little of the format to change it by
        data = changed.data
        hows.append(changed.how)
    target.write_bytes(data)
    return "+".join(hows)


# ----------------------------------------------------------------------------- running one input


@dataclass(frozen=True)
class Outcome:
    kind: str  # one of OUTCOMES or FAILURES
    message: str
    seconds: float
    peak_mib: float


def _resident_limit() -> int:
    """The parent's address space in bytes (VmSize), the base of the children's limit."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_input(read: Callable[[Path], Any], path: Path, sentinel: Path, time_bound: float, memory_bound_mib: float) -> Outcome:
    """``read(path)`` in a forked child, classified (see the module docstring)."""
    limit = _resident_limit() + int(memory_bound_mib * 2**20) + HEADROOM
    # Memory this process freed but kept resident would count as the child's at the fork, and a child that
    # reused it would look as if it allocated nothing: hand it back first.
    _LIBC.malloc_trim(0)
    receive, send = os.pipe()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: report and leave, never return into the caller
        os.close(receive)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                read(path)
                kind, message = "result", ""
            except InputError as err:
                kind, message = "refused", str(err)
            except MemoryError as err:
                kind, message = "memory", f"MemoryError: {err}"
            except BaseException as err:  # noqa: BLE001 - every other exception is what the fuzzer looks for
                text = f"{type(err).__name__}: {err}"
                kind = "memory" if "alloc" in text and "memory" in text else "exception"
                tb = err.__traceback__
                while tb is not None and tb.tb_next is not None:
                    tb = tb.tb_next
                where = f" (at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})" if tb else ""
                message = text[:400] + where
            os.write(send, json.dumps({"kind": kind, "message": message[:600], "start_kib": start_kib}).encode())
        finally:
            os._exit(0)
    os.close(send)
    ready = select.select([receive], [], [], time_bound)[0]
    if not ready:
        os.kill(pid, signal.SIGKILL)
    payload = b"".join(iter(lambda: os.read(receive, 1 << 16), b"")) if ready else b""
    os.close(receive)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    if not ready:
        outcome = Outcome("hang", f"still running after {time_bound:g} s", seconds, 0.0)
    elif not payload:
        outcome = Outcome("crash", f"the process ended with status {status} (signal {os.WTERMSIG(status)})", seconds, 0.0)
    else:
        report = json.loads(payload)
        peak = max(0.0, (usage.ru_maxrss - report["start_kib"]) / 1024)
        kind, message = report["kind"], report["message"]
        if kind in OUTCOMES and peak > memory_bound_mib:
            kind, message = "memory", f"peak {peak:.0f} MiB over the bound; it ended as: {kind} {message}"
        outcome = Outcome(kind, message, seconds, peak)
    if sentinel.exists():
        sentinel.unlink()
        outcome = Outcome("code-run", f"the sentinel file was created; then: {outcome.kind} {outcome.message}",
                          outcome.seconds, outcome.peak_mib)
    return outcome


# ----------------------------------------------------------------------------- the readers, one line each


@dataclass(frozen=True)
class Reader:
    read: Callable[[Path], Any]
    seeds: Callable[..., list[Path]]  # seeds(folder) or seeds(folder, sentinel)
    family: str  # a key of MUTATIONS, or "folder" for a seed that is a folder (its JSON files mutated)
    hostile: Callable[[Path, Path], list[Path]] | None = None


READERS: dict[str, Reader] = {
    "checkpoint-project": Reader(load_generator, project_checkpoints, "safetensors", hostile_project),
    "checkpoint-nvidia": Reader(load_generator, nvidia_pickles, "pickle", hostile_nvidia),
    "checkpoint-tensorflow": Reader(load_generator, tensorflow_pickles, "pickle", hostile_tensorflow),
    "checkpoint-rosinality": Reader(load_generator, rosinality_files, "torch", hostile_rosinality),
    "image": Reader(io.read_image, image_files, "png", hostile_images),
    "mask": Reader(io.read_mask, mask_files, "png", hostile_images),
    "calibration": Reader(load_calibrations, calibration_files, "json", hostile_json),
    "manifest": Reader(read_run, run_folders, "folder", hostile_manifests),
    "card": Reader(read_card, card_files, "json", hostile_json),
    "bank": Reader(read_bank, bank_files, "safetensors", hostile_banks),
}


def _seeds(reader: Reader, folder: Path, sentinel: Path) -> list[Path]:
    folder.mkdir(parents=True)
    takes_sentinel = reader.seeds.__code__.co_argcount == 2
    return reader.seeds(folder, sentinel) if takes_sentinel else reader.seeds(folder)


def fuzz_reader(name: str, reader: Reader, inputs: int, seed: int, work: Path, sentinel: Path, time_bound: float,
                memory_bound_mib: float, keep: Path | None = None) -> dict[str, Any]:
    """Run the crafted inputs and ``inputs`` mutated ones through one reader; the counts and the failures."""
    started = time.perf_counter()
    seeds = _seeds(reader, work / name / "seeds", sentinel)
    for path in seeds:  # the seeds read (they are real files), and every child inherits a warm reader
        reader.read(path)
    cases: list[tuple[str, Path]] = []
    if reader.hostile is not None:
        hostile = work / name / "hostile"
        hostile.mkdir()
        cases += [(f"hostile:{p.name}", p) for p in reader.hostile(hostile, sentinel)]
    counts = dict.fromkeys(OUTCOMES + FAILURES, 0)
    failures, peak, slowest = [], 0.0, 0.0
    scratch = work / name / "scratch"
    scratch.mkdir()
    suffixes = {p.suffix for p in seeds}
    for label, path in cases + [(None, None)] * inputs:
        if label is None:
            rng = random.Random(f"{seed}:{name}:{counts_total(counts)}")
            source = rng.choice(seeds)
            path = scratch / f"input{source.suffix if len(suffixes) > 1 or source.is_file() else ''}"
            label = f"{source.name}:" + mutate_file(source, path, reader.family, rng, sentinel)
        outcome = run_input(reader.read, path, sentinel, time_bound, memory_bound_mib)
        counts[outcome.kind] += 1
        peak, slowest = max(peak, outcome.peak_mib), max(slowest, outcome.seconds)
        if outcome.kind in FAILURES:
            failures.append({"reader": name, "input": label, "kind": outcome.kind, "message": outcome.message})
            if keep is not None:
                kept = keep / name / f"{len(failures):04d}{path.suffix}"
                kept.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if path.is_dir() else shutil.copyfile)(path, kept)
        if path.parent == scratch:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return {"reader": name, "inputs": counts_total(counts), "hostile": len(cases), "counts": counts,
            "peak_mib": round(peak, 1), "slowest_s": round(slowest, 2), "seconds": round(time.perf_counter() - started),
            "failures": failures}


def counts_total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def fuzz(readers: list[str], inputs: int, seed: int, time_bound: float, memory_bound_mib: float,
         keep: Path | None = None) -> list[dict[str, Any]]:
    """Every reader of ``readers`` over its crafted inputs and ``inputs`` mutated ones, in a scratch folder."""
    torch.set_num_threads(1)  # a child forked from a process with a thread pool may deadlock in it
    with tempfile.TemporaryDirectory(prefix="fuzz-readers-") as scratch:
        work = Path(scratch)
        sentinel = work / "SENTINEL-code-was-run"
        return [fuzz_reader(name, READERS[name], inputs, seed, work, sentinel, time_bound, memory_bound_mib, keep)
                for name in readers]


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| reader | inputs (crafted) | result | project's error | " + " | ".join(FAILURES)
            + " | peak MiB | slowest s | total s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        c = r["counts"]
        lines.append(f"| {r['reader']} | {r['inputs']} ({r['hostile']}) | {c['result']} | {c['refused']} | "
                     + " | ".join(str(c[k]) for k in FAILURES) + f" | {r['peak_mib']} | {r['slowest_s']} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=500, help="mutated inputs per reader (besides the crafted ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readers", default=",".join(READERS), help="comma-separated names of READERS")
    parser.add_argument("--time-bound", type=float, default=20.0, help="seconds per input")
    parser.add_argument("--memory-bound", type=float, default=1024.0, help="MiB of peak resident memory per input")
    parser.add_argument("--json", type=Path, help="write the counts and failures here")
    parser.add_argument("--keep", type=Path, help="copy each failing input into this folder")
    args = parser.parse_args(argv)
    names = [n for n in args.readers.split(",") if n]
    unknown = sorted(set(names) - set(READERS))
    if unknown:
        parser.error(f"unknown reader(s) {', '.join(unknown)}; choose from {', '.join(READERS)}")
    started = time.perf_counter()
    rows = fuzz(names, args.inputs, args.seed, args.time_bound, args.memory_bound, args.keep)
    elapsed = time.perf_counter() - started
    print(f"fuzz_readers: seed {args.seed}, {args.inputs} mutated inputs per reader, bounds {args.time_bound:g} s and "
          f"{args.memory_bound:g} MiB per input; {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}, {elapsed:.0f} s")
    print(table(rows))
    failures = [f for r in rows for f in r["failures"]]
    for failure in failures[:40]:
        print(f"FAIL {failure['reader']} {failure['kind']}: {failure['input'][:120]}: {failure['message'][:300]}")
    if args.json:
        io.write_json(args.json, {"seed": args.seed, "inputs": args.inputs, "time_bound_s": args.time_bound,
                                  "memory_bound_mib": args.memory_bound, "rows": rows})
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
