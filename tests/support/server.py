"""The real app for browser checks: ``streamlit run`` on a free loopback port, and Chromium's settings.

Shared by tests/app/test_browser.py and bench/load_test.py. Debian's Chromium is driven through
the ``playwright`` package; ``playwright install`` is never run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXCEPTION = '[data-testid="stException"]'
# True once the script run has ended: Streamlit's status widget no longer says "Running".
IDLE_JS = (
    "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
    " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(cache_dir: str | Path, log_path: str | Path | None = None, start_s: float = 60) -> Iterator[str]:
    """Run ``streamlit run streamlit_app.py`` with ``XWP_CACHE_DIR=cache_dir``; yield its URL, stop it after.

    The server's output goes to ``log_path`` (discarded when None); its tail is in the error
    raised when the server does not answer its health check within ``start_s`` seconds.
    """
    port = free_port()
    env = dict(os.environ, XWP_CACHE_DIR=str(cache_dir), PYTHONUNBUFFERED="1")
    env.pop("XWP_DEFAULT_EPOCHS", None)  # the real default model, as a first visitor gets it
    cmd = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true"]
    cmd += ["--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with open(log_path or os.devnull, "w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + start_s
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"streamlit did not start:\n{log.read()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
