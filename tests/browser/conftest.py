"""The real app served by uvicorn on a free 127.0.0.1 port, and headless Chromium to drive it.

Chromium and chromedriver come from Debian's packages (`.ci/run` installs them). Without them
these tests are skipped locally and fail under CI (CI=true), so a missing install cannot pass
silently. Screenshots go to artifacts/screenshots/ (or $VIRALIENCY_SCREENSHOTS).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.main import create_app
from app.settings import Settings
from tests.cli.tiny import write_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("VIRALIENCY_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "chromium or chromedriver missing: apt-get install -y chromium chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(frozen=True)
class LiveServer:
    url: str
    checkpoint: Path


@contextmanager
def serving(checkpoint: Path) -> Iterator[LiveServer]:
    """uvicorn in a thread, on a socket bound here (so the port is free and known)."""
    settings = Settings(checkpoint=checkpoint, device="cpu", decode_threads=2, max_batch_size=8)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(create_app(settings), log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.1)
    try:
        yield LiveServer(url, checkpoint)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The tiny LENA checkpoint, served."""
    with serving(write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoint"))) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Chromium that can reach 127.0.0.1 only: any other host fails to resolve."""
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
