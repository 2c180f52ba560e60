"""A real browser for the dashboard tests: Debian's Chromium driven by Playwright.

    with chromium() as context:          a fresh profile, headless, nothing phoning home
        page = context.new_page()

Playwright's own browser download does not work here, so it drives the system Chromium
(`/usr/bin/chromium`, or `$DEALS_CHROMIUM`) through `executable_path`; `.ci/run` installs
the Debian package when it is missing. Without Chromium the browser tests are skipped
locally and fail under CI (where it must be there).

    dashboard_server(home, config, env)  `deals dashboard` in a subprocess on a free port of
                                         127.0.0.1, stopped (SIGTERM) when the block ends
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.fakes.daemon import REPO

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(os.environ.get("DEALS_SCREENSHOTS", REPO / "build" / "dashboard-screenshots"))


def chromium_path() -> str | None:
    for candidate in (os.environ.get("DEALS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def require_chromium() -> str:
    path = chromium_path()
    if path is None:
        message = "Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'")
    return path


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium with a fresh profile (a Playwright BrowserContext)."""
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with tempfile.TemporaryDirectory(prefix="deals-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dashboard_server(config: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """`deals dashboard` on 127.0.0.1 in a subprocess; its base URL."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deals", "--config", str(config), "dashboard", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"deals dashboard exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"deals dashboard did not answer:\n{log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


__all__ = ["CHROMIUM_FLAGS", "SCREENSHOTS", "chromium", "chromium_path", "dashboard_server", "free_port", "require_chromium"]
