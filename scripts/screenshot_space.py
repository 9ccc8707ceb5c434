# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Start the demo Space on 127.0.0.1 and save a screenshot of its page with headless Chromium.

    python scripts/screenshot_space.py --model path/to/export --out space_screenshot.png

Needs a `chromium` (or `chromium-browser` / `google-chrome`) binary (e.g. `apt-get install -y chromium`); not run in CI.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no Chromium binary found: install one, e.g. `apt-get install -y chromium`")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--out", default="space_screenshot.png")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--window", default="1280,1400", help="width,height")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the app")
    args = parser.parse_args(argv)
    browser = find_browser()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO_ROOT)}
    app = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "space" / "app.py"),
            "--model",
            args.model,
            "--port",
            str(args.port),
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            if app.poll() is not None:
                raise SystemExit(f"the app exited with code {app.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", args.port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the app did not start within {args.timeout} s")
            time.sleep(0.5)
        out = Path(args.out).resolve()
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={args.window}",
                "--virtual-time-budget=15000",
                f"--screenshot={out}",
                f"http://127.0.0.1:{args.port}/",
            ],
            check=True,
            timeout=120,
        )
        print(f"saved {out}")
    finally:
        app.terminate()
        app.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
