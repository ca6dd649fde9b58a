"""The HTML report of a data-set run: its table and links, and in headless Chromium (Debian's package) that it
opens from disk without a network request, shows every picture, and sorts when a header is clicked."""

import base64
import fcntl
import io as bytes_io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import sample_images, tiny_generator
from PIL import Image

import brgm_pyro as bp
from brgm_pyro import io
from brgm_pyro.dataset.manifest import read_manifest
from brgm_pyro.dataset.report import REPORT_NAME, write_report
from brgm_pyro.dataset.run import PosteriorRequest, reconstruct_dataset
from brgm_pyro.errors import InputError

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--window-size=1400,900", "--remote-debugging-pipe",
]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A real run with a posterior: four images, one of them unreadable, one in a subfolder."""
    root = tmp_path_factory.mktemp("report")
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    low = bp.forward.Downsample(2)(sample_images(G, 3, seed=4)).clamp(0, 1)
    inputs = root / "in"
    (inputs / "sub").mkdir(parents=True)
    for i, name in enumerate(["b one.png", "a.png", "sub/c.png"]):
        io.write_image(inputs / name, low[i])
    (inputs / "broken.png").write_bytes(b"no image")
    out = root / "run"
    reconstruct_dataset(inputs, out, bp.forward.Downsample(2), G, perceptual=None, schedule=bp.MAPSchedule(steps=4),
                        posterior=PosteriorRequest("svi", 3, options={"guide": "normal", "steps": 3}), progress=False)
    write_report(out)
    return out


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.rows, self.headers, self._row = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "tr":
            self._row = []
        elif tag == "td" and self._row is not None:
            self._row.append(attrs.get("data-value"))

    def handle_endtag(self, tag):
        if tag == "tr" and self._row:
            self.rows.append(self._row)
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self.lasttag == "th":
            self.headers.append(data)


def test_the_report_lists_every_image_with_relative_links_to_its_files(run_folder):
    page = _Page()
    page.feed((run_folder / REPORT_NAME).read_text())
    images = [row[0] for row in page.rows if row[0] is not None and not row[0].startswith("{")]
    assert images[:4] == ["a.png", "b one.png", "broken.png", "sub/c.png"]
    assert "std map" in page.headers and "PSNR to y (dB)" in page.headers
    assert page.links and all(not link.startswith(("http", "//", "/")) for link in page.links)
    for link in page.links:
        assert (run_folder / link.replace("%20", " ")).is_file(), link
    manifest = read_manifest(run_folder)
    rows = {row[0]: dict(zip(page.headers, row)) for row in page.rows[:4]}
    assert rows["broken.png"]["status"] == "failed" and "not an image file" in rows["broken.png"]["reason"]
    assert float(rows["a.png"]["PSNR to y (dB)"]) == manifest.images["a.png"]["metrics"]["psnr_y"]
    assert int(rows["sub/c.png"]["seed"]) == manifest.images["sub/c.png"]["seed"]


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (JSON messages ending in NUL on fds 3 and 4)."""

    def __init__(self, chromium, profile):
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # Moved above 4 so that the child can place them at 3 and 4 without clobbering one with the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_read, replies_write)]

        def place():
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=place, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for fd in (*high, commands_read, replies_write):
            os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []

    def _message(self):
        while b"\0" not in self._buffer:
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, session=None, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method):
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self._message())

    def close(self):
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    profile = tmp_path / "profile"
    profile.mkdir()
    tools = DevTools(chromium, profile)
    yield tools
    tools.close()


def _click(tools, session, selector):
    box = tools.send("Runtime.evaluate", session, returnByValue=True, expression=(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"))["result"]["value"]
    for kind in ("mousePressed", "mouseReleased"):
        tools.send("Input.dispatchMouseEvent", session, type=kind, x=box[0], y=box[1], button="left", clickCount=1)


def _column(tools, session, index):
    expression = f"Array.from(document.querySelectorAll('#images tbody tr')).map(r => r.cells[{index}].dataset.value)"
    return tools.send("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"]["value"]


def test_the_report_opens_offline_in_chromium_and_sorts_on_a_header_click(run_folder, browser, tmp_path):
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Network", "Runtime"):
        browser.send(f"{domain}.enable", session)
    browser.send("Emulation.setDeviceMetricsOverride", session, width=1400, height=900, deviceScaleFactor=1,
                 mobile=False)
    browser.send("Page.navigate", session, url=(run_folder / REPORT_NAME).resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    requested = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert requested and all(url.startswith("file://") for url in requested), requested
    # The pictures load lazily, as they scroll into view: load them all now, and wait for each.
    images = browser.send("Runtime.evaluate", session, returnByValue=True, awaitPromise=True, expression=(
        "Promise.all(Array.from(document.images).map(i => { i.loading = 'eager'; return i.decode().then("
        "() => [i.complete, i.naturalWidth], () => [false, 0]); }))"))["result"]["value"]
    assert len(images) == 3 * 4 and all(done and width > 0 for done, width in images)

    psnr_column = [header.strip() for header in _headers(browser, session)].index("PSNR to y (dB)")
    manifest = read_manifest(run_folder)
    by_psnr = sorted((r["metrics"]["psnr_y"], image) for image, r in manifest.images.items() if r["status"] == "done")
    _click(browser, session, f"#images th:nth-child({psnr_column + 1})")
    assert _column(browser, session, 0) == [image for _, image in by_psnr] + ["broken.png"]
    _click(browser, session, f"#images th:nth-child({psnr_column + 1})")
    assert _column(browser, session, 0) == [image for _, image in reversed(by_psnr)] + ["broken.png"]
    _click(browser, session, "#images th:nth-child(1)")
    assert _column(browser, session, 0) == sorted(manifest.images)

    shot = base64.b64decode(browser.send("Page.captureScreenshot", session, format="png")["data"])
    (tmp_path / "report.png").write_bytes(shot)  # kept by pytest's tmp_path for a look after a failure
    picture = np.asarray(Image.open(bytes_io.BytesIO(shot)).convert("L"), dtype=float)
    assert picture.shape == (900, 1400) and picture.std() > 10  # a rendered page, not a blank one


def _headers(tools, session):
    expression = "Array.from(document.querySelectorAll('#images th')).map(h => h.textContent)"
    return tools.send("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"]["value"]


def test_write_report_needs_a_run_folder(tmp_path):
    with pytest.raises(InputError, match="holds no brgm data-set run"):
        write_report(tmp_path)
    assert not Path(tmp_path / REPORT_NAME).exists()


HOSTILE = ["<img src=x onerror=alert(1)>.png", "<img src=x onerror=document.body.dataset.pwned=1>.png"]
HOSTILE_FOLDER = '"><svg onload=document.body.dataset.pwned=2>'
HOSTILE_RUN = "run <img src=x onerror=document.body.dataset.pwned=3>"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A posterior run whose input files, a folder of them, and the run's folder are named with markup that runs
    script if a page pastes it unescaped."""
    root = tmp_path_factory.mktemp("hostile")
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    low = bp.forward.Downsample(2)(sample_images(G, 3, seed=4)).clamp(0, 1)
    inputs = root / "in"
    (inputs / HOSTILE_FOLDER).mkdir(parents=True)
    for i, name in enumerate([*HOSTILE, f"{HOSTILE_FOLDER}/c.png"]):
        io.write_image(inputs / name, low[i])
    out = root / HOSTILE_RUN
    reconstruct_dataset(inputs, out, bp.forward.Downsample(2), G, perceptual=None, schedule=bp.MAPSchedule(steps=2),
                        posterior=PosteriorRequest("svi", 3, options={"guide": "normal", "steps": 2}), progress=False)
    write_report(out)
    return out


def test_names_with_markup_show_as_text_run_nothing_and_the_table_fits_1400_px(hostile_run, browser, tmp_path):
    """In Chromium at 1400 px: no handler of a name ran (alert is replaced by a marker, so that a dialog cannot
    block the page), the names read as they are, every picture loads, and the table with its posterior columns
    fits the window (it was 1624 px wide before its headers could wrap)."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    browser.send("Page.enable", session)
    browser.send("Page.addScriptToEvaluateOnNewDocument", session,
                 source="window.alert = () => { document.documentElement.dataset.alerted = 'yes'; };")
    browser.send("Emulation.setDeviceMetricsOverride", session, width=1400, height=900, deviceScaleFactor=1,
                 mobile=False)
    browser.send("Page.navigate", session, url=(hostile_run / REPORT_NAME).resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    loaded = browser.send("Runtime.evaluate", session, returnByValue=True, awaitPromise=True, expression=(
        "Promise.all(Array.from(document.images).map(i => { i.loading = 'eager'; return i.decode().then("
        "() => i.naturalWidth > 0, () => false); }))"))["result"]["value"]
    page = browser.send("Runtime.evaluate", session, returnByValue=True, expression=(
        "({marks: [document.documentElement.dataset.alerted, document.body.dataset.pwned], title: document.title,"
        " names: Array.from(document.querySelectorAll('#images tbody tr')).map(r => r.cells[0].textContent),"
        " width: document.getElementById('images').getBoundingClientRect().right,"
        " scroll: document.documentElement.scrollWidth, svg: document.querySelectorAll('svg').length})"))["result"]["value"]
    shot = base64.b64decode(browser.send("Page.captureScreenshot", session, format="png")["data"])
    (tmp_path / "hostile.png").write_bytes(shot)  # kept by pytest's tmp_path for a look after a failure
    assert page["marks"] == [None, None] and page["svg"] == 0
    assert not [e for e in browser.events if e.get("method") == "Page.javascriptDialogOpening"]
    assert page["title"] == f"brgm data-set run: {HOSTILE_RUN}"
    assert sorted(page["names"]) == sorted([*HOSTILE, f"{HOSTILE_FOLDER}/c.png"])
    assert len(loaded) == 3 * 4 and all(loaded)  # input, reconstruction, f(reconstruction), std map per image
    assert page["width"] <= 1400 and page["scroll"] <= 1400, page
