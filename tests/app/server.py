"""The real server as the README starts it (`python -m app`), in a subprocess on a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until /readyz answers 200 (start-up is slow on a busy 2-core machine)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the server exited during start-up"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not become ready")

    def rss_mib(self) -> float:
        """Resident memory of the server process (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def events(self, name: str) -> list[dict[str, object]]:
        """The JSON log lines with this `event`."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                entry = json.loads(line)
                if entry.get("event") == name:
                    found.append(entry)
        return found


@contextmanager
def serving(checkpoint: Path, tmp_path: Path, **settings: str) -> Iterator[Server]:
    """`python -m app` with VIRALIENCY_<NAME>=value for each setting; killed if still up."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRALIENCY_")}
    env.update(
        VIRALIENCY_CHECKPOINT=str(checkpoint),
        VIRALIENCY_DEVICE="cpu",
        VIRALIENCY_HOST="127.0.0.1",
        VIRALIENCY_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    env.update({f"VIRALIENCY_{name.upper()}": value for name, value in settings.items()})
    log_path = tmp_path / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield Server(process, f"http://127.0.0.1:{port}", log_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        print(log_path.read_text(errors="replace")[-4000:])  # shown on failure
