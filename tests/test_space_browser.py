# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The demo Space in a real browser: headless Chromium, driven over the Chrome DevTools Protocol, loads
space/app.py (a tiny random model), uploads a chest X-ray, presses Run and must show the 14 scores and the overlay
image at the X-ray's size. A screenshot is kept under tests/artifacts/ (ignored by git)."""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
from archive_testing import FIXTURES, make_model_dir
from helpers import REPO_ROOT, stop_process

from clarity_hf.configuration_clarity import NIH_PATHOLOGIES

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
IMAGE = FIXTURES / "00000001_000.png"  # 512 x 512
BROWSER = next(
    (
        shutil.which(n)
        for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if shutil.which(n)
    ),
    None,
)
pytestmark = [
    pytest.mark.skipif(BROWSER is None, reason="no chromium binary (apt-get install -y chromium)"),
    pytest.mark.skipif(not IMAGE.is_file(), reason="the fixture image is missing"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"process exited with {process.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    pytest.fail(f"nothing listened on port {port} within {timeout} s")


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, websocket_url: str):
        import websocket

        self.socket = websocket.create_connection(websocket_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.3)
        pytest.fail(
            f"the page did not show {what} within {timeout} s: {self.evaluate('document.body.innerText')!r}"
        )


@pytest.fixture
def processes(tmp_path):
    started = []
    yield started
    for process in started:
        stop_process(process)


def test_space_in_headless_chromium_shows_scores_and_overlay(tmp_path, processes):
    pytest.importorskip("gradio")
    pytest.importorskip("websocket", reason="needs websocket-client")
    model_dir = make_model_dir(tmp_path / "model")
    app_port, debug_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    app = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "space" / "app.py"),
            "--model",
            str(model_dir),
            "--port",
            str(app_port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.append(app)
    browser = subprocess.Popen(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,1600",
            f"--remote-debugging-port={debug_port}",
            f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.append(browser)
    _wait_for_port(debug_port, browser, 60)
    _wait_for_port(app_port, app, 180)
    pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=30).read())
    page = DevTools(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"])
    page.call("Page.enable")
    page.call("Page.navigate", url=f"http://127.0.0.1:{app_port}/")
    page.wait_for("!!document.querySelector('input[type=file]')", 120, "the upload field")
    assert "NOT for clinical use" in page.evaluate("document.body.innerText")

    root = page.call("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
    node = page.call("DOM.querySelector", nodeId=root, selector="input[type=file]")["nodeId"]
    page.call("DOM.setFileInputFiles", files=[str(IMAGE)], nodeId=node)
    page.wait_for(f"document.body.innerText.includes({json.dumps(IMAGE.name)})", 60, "the uploaded file")
    page.evaluate("[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Run').click()")

    names = json.dumps(list(NIH_PATHOLOGIES))
    page.wait_for(
        f"{names}.every(n => document.body.innerText.includes(n)) && "
        "[...document.querySelectorAll('img')].some(i => i.complete && i.naturalWidth === 512)",
        180,
        "the 14 scores and the overlay",
    )
    # Every class has its score as a percentage; the overlay is the X-ray's size and in colour.
    text = page.evaluate("document.body.innerText")
    assert text.count("%") >= len(NIH_PATHOLOGIES)
    size = page.evaluate(
        "(() => { const i = [...document.querySelectorAll('img')].find(i => i.naturalWidth === 512);"
        " return [i.naturalWidth, i.naturalHeight]; })()"
    )
    assert size == [512, 512]
    shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "space_browser.png"
    path.write_bytes(base64.b64decode(shot))
    print(f"screenshot: {path}")
    assert path.stat().st_size > 10_000
