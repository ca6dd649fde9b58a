"""Image and file I/O: lossless PNG round trips, conversions, masks, atomic writes, output safety."""

import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brgm_pyro import io


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_png_round_trip_is_lossless_at_8_bit(tmp_path):
    gray = (torch.arange(256, dtype=torch.float32) / 255).reshape(1, 16, 16)
    rgb = torch.stack([gray[0], gray[0].flip(0), gray[0].T])
    for name, img in [("gray.png", gray), ("rgb.png", rgb)]:
        io.write_image(tmp_path / name, img)
        back = io.read_image(tmp_path / name)
        assert back.dtype == torch.float32 and back.shape == img.shape
        assert torch.equal(back, img)
    assert Image.open(tmp_path / "gray.png").mode == "L"
    assert Image.open(tmp_path / "rgb.png").mode == "RGB"


def test_write_image_accepts_hw_and_clamps(tmp_path):
    img = torch.tensor([[-0.5, 0.2], [1.7, 1.0]])
    io.write_image(tmp_path / "a.png", img)
    back = io.read_image(tmp_path / "a.png")
    assert back.shape == (1, 2, 2)
    assert torch.equal(back[0], torch.tensor([[0.0, 51 / 255], [1.0, 1.0]]))


def test_16_bit_png_is_read_at_full_precision(tmp_path):
    values = np.array([[0, 1, 1000], [32768, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    img = io.read_image(tmp_path / "deep.png")
    assert img.shape == (1, 2, 3) and img.dtype == torch.float32
    assert torch.equal(img[0], torch.from_numpy((values / 65535.0).astype(np.float32)))
    assert img[0, 0, 1] > 0  # a 1/65535 step survives: not squeezed through 8 bits


def test_rgb_to_gray_uses_luma_weights(tmp_path):
    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 200, 30]]], dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(tmp_path / "colour.png")
    gray = io.read_image(tmp_path / "colour.png", channels=1)
    expected = (torch.from_numpy(pixels).float() / 255) @ torch.tensor([0.299, 0.587, 0.114])
    assert gray.shape == (1, 2, 2)
    assert torch.allclose(gray[0], expected, atol=1e-6)


def test_gray_to_rgb_and_opaque_alpha_and_palette(tmp_path):
    Image.fromarray(np.full((3, 4), 51, np.uint8), "L").save(tmp_path / "g.png")
    rgb = io.read_image(tmp_path / "g.png", channels=3)
    assert rgb.shape == (3, 3, 4) and torch.all(rgb == 51 / 255)

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255  # opaque: the alpha channel holds nothing and is dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    img = io.read_image(tmp_path / "rgba.png")
    assert img.shape == (3, 2, 2) and torch.all(img[0] == 1) and torch.all(img[1:] == 0)

    Image.fromarray(np.stack([np.full((2, 2), 102, np.uint8), np.full((2, 2), 255, np.uint8)], -1), "LA").save(
        tmp_path / "la.png"
    )
    assert torch.all(io.read_image(tmp_path / "la.png") == torch.full((1, 2, 2), 102 / 255))

    colours = np.zeros((2, 2, 3), np.uint8)
    colours[0, 0], colours[1, 1] = (255, 0, 0), (0, 0, 255)
    Image.fromarray(colours, "RGB").convert("P").save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert torch.equal(io.read_image(tmp_path / "p.png"), torch.from_numpy(colours).permute(2, 0, 1).float() / 255)


def test_a_grey_palette_image_reads_as_the_grayscale_image_it_is(tmp_path):
    gray = np.array([[0, 64], [128, 255]], np.uint8)
    Image.fromarray(gray, "L").convert("P").save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    img = io.read_image(tmp_path / "p.png")
    assert img.shape == (1, 2, 2) and torch.equal(img[0], torch.from_numpy(gray).float() / 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_refused_not_dropped(tmp_path, mode):
    """A transparent pixel has no value to observe: reading its colour (or compositing a background in)
    would hand the model made-up data as observed, so the reader refuses it and names the mask instead."""
    rgba = np.full((4, 4, 4), 200, np.uint8)
    rgba[:2, :2, 3] = 0
    image = Image.fromarray(rgba, "RGBA")
    image = image.convert("LA") if mode == "LA" else image.convert("P") if mode == "P" else image
    if mode == "P":
        image.info["transparency"] = 0
        image.putpixel((0, 0), 0)
        image.putpixel((3, 3), 1)
        image.putpalette([200, 200, 200, 10, 20, 30])
    image.save(tmp_path / "t.png")
    assert Image.open(tmp_path / "t.png").mode == mode
    with pytest.raises(ValueError, match=r"t\.png has \d+ transparent pixel\(s\).*mask"):
        io.read_image(tmp_path / "t.png")


def test_channels_argument_is_checked(tmp_path):
    io.write_image(tmp_path / "a.png", torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="channels must be None, 1 or 3"):
        io.read_image(tmp_path / "a.png", channels=2)


def test_mask_convention(tmp_path):
    values = np.array([[0, 255, 0, 255]], dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "mask.png")
    mask = io.read_mask(tmp_path / "mask.png")
    assert mask.shape == (1, 4) and mask.dtype == torch.float32
    assert mask.tolist() == [[0.0, 1.0, 0.0, 1.0]]  # white = observed

    colour = np.zeros((1, 2, 3), np.uint8)
    colour[0, 1] = 255
    Image.fromarray(colour, "RGB").save(tmp_path / "colour_mask.png")
    assert io.read_mask(tmp_path / "colour_mask.png").tolist() == [[0.0, 1.0]]
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "deep_mask.png")
    assert io.read_mask(tmp_path / "deep_mask.png").tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize(
    "values, problem",
    [
        (np.full((4, 4), 255, np.uint8), "white everywhere"),  # read as fully observed: nothing to inpaint
        (np.full((4, 4), 128, np.uint8), "16 grey pixel"),  # read as fully observed at a 0.5 threshold
        (np.array([[0, 127, 128, 255]], np.uint8), "2 grey pixel"),  # anti-aliased edges
    ],
)
def test_masks_that_are_not_black_and_white_are_refused(tmp_path, values, problem):
    Image.fromarray(values).save(tmp_path / "mask.png")
    with pytest.raises(ValueError, match=rf"The mask .*mask\.png .*{problem}"):
        io.read_mask(tmp_path / "mask.png")


def test_read_images_stacks_and_checks_sizes(tmp_path):
    io.write_image(tmp_path / "a.png", torch.zeros(1, 4, 4))
    io.write_image(tmp_path / "b.png", torch.ones(3, 4, 4))
    io.write_image(tmp_path / "c.png", torch.zeros(1, 4, 5))
    batch = io.read_images([tmp_path / "a.png", tmp_path / "b.png"], channels=3)
    assert batch.shape == (2, 3, 4, 4) and torch.equal(batch[1], torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match=r"same size.*a\.png is 4x4.*c\.png is 5x4"):
        io.read_images([tmp_path / "a.png", tmp_path / "c.png"])
    with pytest.raises(ValueError, match="channel"):
        io.read_images([tmp_path / "a.png", tmp_path / "b.png"])
    with pytest.raises(ValueError, match="No image paths"):
        io.read_images([])


def test_clear_errors_for_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Image file not found: .*nothing.png"):
        io.read_image(tmp_path / "nothing.png")
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(ValueError, match=r"notes\.png is not an image file"):
        io.read_image(tmp_path / "notes.png")
    io.write_image(tmp_path / "good.png", torch.rand(3, 32, 32))
    payload = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match=r"cut\.png is corrupt or truncated"):
        io.read_image(tmp_path / "cut.png")
    with pytest.raises(IsADirectoryError):
        io.read_image(tmp_path)


def _in_child(function, user=None):
    """``function()`` in a forked child, as ``user`` (uid, gid) if given: what it raised, as "Type: message",
    or "" when it returned; None when it had not finished after 20 s (it is then killed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            if user is not None:
                os.setgid(user[1])
                os.setuid(user[0])
            function()
            message = ""
        except BaseException as err:  # noqa: BLE001 - reported to the parent, whatever it is
            message = f"{type(err).__name__}: {err}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    ready = select.select([read], [], [], 20)[0]
    if not ready:
        os.kill(pid, signal.SIGKILL)
    text = b"".join(iter(lambda: os.read(read, 1 << 16), b"")).decode() if ready else None
    os.close(read)
    os.waitpid(pid, 0)
    return text


def test_an_unreadable_image_is_reported_as_unreadable_not_corrupt(tmp_path):
    """Mode 000. Root reads any file whatever its mode, and the tests run as root, so as root the read runs in
    a child process that has become the user 'nobody' (uid 65534), for whom the kernel enforces the mode: the
    real permission check, not a simulated one. The file lies in a folder 'nobody' may enter."""
    folder = Path(tempfile.mkdtemp(dir="/tmp" if os.geteuid() == 0 else tmp_path))
    try:
        folder.chmod(0o755)
        io.write_image(folder / "locked.png", torch.rand(1, 4, 4))
        (folder / "locked.png").chmod(0o000)
        user = (65534, 65534) if os.geteuid() == 0 else None
        result = _in_child(lambda: io.read_image(folder / "locked.png"), user)
        assert result.startswith("InputError: The image") and "locked.png cannot be read: permission denied" in result
        assert "corrupt" not in result
    finally:
        shutil.rmtree(folder)


def test_a_named_pipe_is_refused_instead_of_blocking_the_reader(tmp_path):
    """A FIFO where an image is expected: opening it for reading waits for a writer, forever."""
    os.mkfifo(tmp_path / "pipe.png")
    os.mkfifo(tmp_path / "pipe_mask.png")
    assert _in_child(lambda: io.read_image(tmp_path / "pipe.png")) == (
        f"InputError: The image {tmp_path / 'pipe.png'} is a named pipe (FIFO), not a file; give the path of an "
        "image file."
    )
    assert "The mask" in _in_child(lambda: io.read_mask(tmp_path / "pipe_mask.png"))


def _png(width, height, rows, level=9):
    """A grayscale 8-bit PNG of the given header size whose compressed pixel stream is ``rows`` (an iterable
    of filtered scan lines), compressed row by row so that a huge image never sits in memory."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(level)
    stream = b"".join(compressor.compress(row) for row in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def test_a_decompression_bomb_gets_one_sentence_before_any_decoding(tmp_path):
    """14000 x 14000 zeros compress to a megabyte; like 30000 x 30000 (quicker to write) they are over Pillow's
    bound of 179 M pixels, which Pillow refuses with its own DecompressionBombError. 5000 x 5000 is under
    Pillow's bounds but over ours: its pixel stream is cut short, so decoding it would report a truncated
    file; the refusal names the size, so it came from the header."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(14000, 14000, (bytes(14001 * 100) for _ in range(140)), level=1))
    assert bomb.stat().st_size < 1 << 21
    with pytest.raises(ValueError, match=r"bomb\.png claims more than 16,777,216 pixels \(4096 x 4096\)") as caught:
        io.read_image(bomb)
    assert type(caught.value).__name__ == "InputError"
    large = tmp_path / "large.png"
    large.write_bytes(_png(5000, 5000, [bytes(5001)] * 10))
    with pytest.raises(ValueError, match=r"claims 5000 x 5000 pixels, more than 16,777,216"):
        io.read_image(large)
    edge = tmp_path / "edge.png"  # exactly at the bound: read
    edge.write_bytes(_png(4096, 4096, (bytes(4097) for _ in range(4096))))
    assert io.read_image(edge).shape == (1, 4096, 4096)


def test_write_image_refuses_nan_and_bad_input(tmp_path):
    (tmp_path / "keep.png").write_bytes(b"old")
    img = torch.zeros(1, 2, 2)
    img[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        io.write_image(tmp_path / "keep.png", img)
    assert (tmp_path / "keep.png").read_bytes() == b"old"
    with pytest.raises(ValueError, match="suffix .png"):
        io.write_image(tmp_path / "a.jpg", torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"shape \(C, H, W\)"):
        io.write_image(tmp_path / "a.png", torch.zeros(2, 2, 2))
    assert _listing(tmp_path) == ["keep.png"]


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    io.write_image(tmp_path / "img.png", torch.rand(1, 8, 8))
    io.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    io.atomic_write_text(tmp_path / "t.txt", "héllo")
    io.write_json(tmp_path / "r.json", {"psnr": torch.tensor(30.5), "path": tmp_path, "v": np.arange(2)})
    assert _listing(tmp_path) == ["b.bin", "img.png", "r.json", "t.txt"]
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == {"psnr": 30.5, "path": str(tmp_path), "v": [0, 1]}
    assert '\n  "psnr": 30.5' in text and text.endswith("}\n")


def test_atomic_path_does_not_clobber_on_failure(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("finished output")
    with pytest.raises(RuntimeError, match="interrupted"), io.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp != target
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "finished output"
    assert _listing(tmp_path) == ["result.txt"]

    with (
        pytest.raises(FileNotFoundError, match="Nothing was written"),
        io.atomic_path(tmp_path / "empty.txt"),
    ):
        pass
    assert _listing(tmp_path) == ["result.txt"]

    with io.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and _listing(tmp_path) == ["result.txt"]


def test_stale_temporaries_finds_what_a_killed_writer_left(tmp_path):
    """A process killed with SIGKILL inside atomic_path leaves its temporary file and no destination;
    stale_temporaries finds exactly those files, in subfolders too, and nothing a user named alike."""
    (tmp_path / "sub").mkdir()
    code = (
        "import os, signal, sys\n"
        "from brgm_pyro import io\n"
        "with io.atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    for target in (tmp_path / "a.png", tmp_path / "sub" / "run.json", tmp_path / "sub" / "noext"):
        done = subprocess.run([sys.executable, "-c", code, str(target)], timeout=60)
        assert done.returncode == -signal.SIGKILL and not target.exists()
    for name in (".notes.txt", "x.tmp-0123456789ab.png", ".a.tmp-short.png", "kept.png"):
        (tmp_path / name).write_text("user file")
    stale = io.stale_temporaries(tmp_path)
    assert [p.parent for p in stale] == [tmp_path, tmp_path / "sub", tmp_path / "sub"]
    assert sorted(p.name.split(".tmp-")[0] for p in stale) == [".a", ".noext", ".run"]
    assert all(p.read_bytes() == b"half" for p in stale)


def test_atomic_path_needs_an_existing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        io.atomic_write_text(tmp_path / "missing" / "a.txt", "x")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        io.atomic_write_text(tmp_path, "x")


def test_ensure_output_dir(tmp_path):
    out = io.ensure_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and io.ensure_output_dir(out) == out
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"output folder .*file exists as a file; choose another"):
        io.ensure_output_dir(tmp_path / "file")
    with pytest.raises(NotADirectoryError, match="a file stands in its path"):
        io.ensure_output_dir(tmp_path / "file" / "sub")


def test_check_not_input(tmp_path, monkeypatch):
    source = tmp_path / "in.png"
    source.write_bytes(b"x")
    io.check_not_input(tmp_path / "out.png", [source])
    with pytest.raises(ValueError, match="would overwrite the input"):
        io.check_not_input(source, [tmp_path / "other.png", source])
    with pytest.raises(ValueError, match="would overwrite the input"):
        io.check_not_input(tmp_path / "sub" / ".." / "in.png", [source])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="would overwrite the input"):
        io.check_not_input("in.png", [source])
    os.symlink(source, tmp_path / "link.png")
    with pytest.raises(ValueError, match="would overwrite the input"):
        io.check_not_input(tmp_path / "link.png", [source])
    os.link(source, tmp_path / "hard.png")
    with pytest.raises(ValueError, match="would overwrite the input"):
        io.check_not_input(tmp_path / "hard.png", [source])


def test_save_grid_size_and_blocky_upscaling(tmp_path):
    low = torch.rand(1, 8, 8)
    high = torch.rand(1, 32, 32)
    io.save_grid(tmp_path / "grid.png", [[low, high, high], [high]], scale=2, pad=2)
    grid = io.read_image(tmp_path / "grid.png")
    assert grid.shape == (1, 2 + 2 * (64 + 2), 2 + 3 * (64 + 2))

    quantised = (low * 255).round() / 255
    blocky = quantised.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    assert torch.equal(grid[:, 2:66, 2:66], blocky)
    doubled = ((high * 255).round() / 255).repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert torch.equal(grid[:, 2:66, 68:132], doubled)
    assert torch.all(grid[:, :2] == 1) and torch.all(grid[:, 66:68] == 1)  # separators
    assert torch.all(grid[:, 68:134, 68:] == 1)  # the short second row leaves background


def test_save_grid_mixes_gray_and_colour(tmp_path):
    io.save_grid(tmp_path / "g.png", [[torch.zeros(4, 4), torch.ones(3, 4, 4)]], pad=0)
    grid = io.read_image(tmp_path / "g.png")
    assert grid.shape == (3, 4, 8)
    assert torch.all(grid[:, :, :4] == 0) and torch.all(grid[:, :, 4:] == 1)
    with pytest.raises(ValueError, match="at least one row"):
        io.save_grid(tmp_path / "e.png", [[]])
