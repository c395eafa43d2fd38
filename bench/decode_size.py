"""Decode cost by photo size: POST /score with 8 JPEGs of 640x480, 1080x1080 or 4032x3024.

    python -m bench.decode_size --checkpoint weights --rounds 6

Starts two copies of the real service (`app.main.run` on 127.0.0.1, free ports, CPU): one as
shipped (JPEGs decoded at a reduced DCT scale, model.images.DECODE_SCALE = 2) and one that
decodes every pixel (DECODE_SCALE = 0, as before). One request at a time, the sizes and the
two servers interleaved round by round, so both see the same machine. Prints the median time
per request and each size's ratio to 640x480 on the same server, as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

from bench.load import HOST, ROOT, free_port

SIZES = ((640, 480), (1080, 1080), (4032, 3024))
MODES = {"reduced decode": 2, "full decode": 0}  # name -> model.images.DECODE_SCALE


def tiled(tile: np.ndarray, width: int, height: int) -> np.ndarray:
    """`tile` repeated to cover height x width (JPEG codes each 8x8 block on its own)."""
    reps = (height // tile.shape[0] + 1, width // tile.shape[1] + 1, 1)
    return np.tile(tile, reps)[:height, :width]


def photo_jpeg(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG (quality 90): smooth gradients, soft blobs, fine grain."""
    rng = np.random.default_rng(seed)
    ramp_x = np.linspace(40, 200, width, dtype=np.float32)
    ramp_y = np.linspace(40, 200, height, dtype=np.float32)
    base = (ramp_x[None, :, None] + ramp_y[:, None, None]) / 2 + np.zeros(3, np.float32)
    blobs = cv2.resize(rng.normal(0, 40, (12, 16, 3)).astype(np.float32), (width, height))
    tile = rng.normal(0, 25, (120, 160, 3)).astype(np.float32)  # texture, repeated
    texture = tiled(cv2.resize(tile, (1280, 960)), width, height)
    grain = tiled(rng.normal(0, 6, (240, 320, 3)).astype(np.float32), width, height)
    rgb = np.clip(base + blobs + texture + grain, 0, 255).astype(np.uint8)
    ok, buffer = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buffer.tobytes()


class Server:
    """The app in a subprocess with model.images.DECODE_SCALE set before it starts; `root` is
    the checkout it runs from (another worktree serves an earlier version side by side)."""

    def __init__(
        self, checkpoint: Path, decode_scale: int, log_path: Path, root: Path = ROOT
    ) -> None:
        self.url = f"http://{HOST}:{free_port()}"
        env = {
            **os.environ,
            "VIRALIENCY_CHECKPOINT": str(checkpoint),
            "VIRALIENCY_DEVICE": "cpu",
            "VIRALIENCY_HOST": HOST,
            "VIRALIENCY_PORT": self.url.rsplit(":", 1)[1],
            "VIRALIENCY_REQUEST_DEADLINE_S": "300",  # time what it costs, never a 504
        }
        code = f"import model.images as m; m.DECODE_SCALE = {decode_scale}; import app.__main__"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=root, env=env, stdout=self._log, stderr=self._log
        )

    def wait_ready(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server {self.url} did not become ready; see {self._log.name}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self._log.close()


def post(client: httpx.Client, url: str, jpegs: list[bytes]) -> float:
    """Seconds for one /score request carrying `jpegs`."""
    files = [("images", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(jpegs)]
    started = time.perf_counter()
    response = client.post(f"{url}/score", files=files)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "weights")
    parser.add_argument("--rounds", type=int, default=12, help="timed requests per cell")
    parser.add_argument("--per-request", type=int, default=8, help="images per request")
    args = parser.parse_args()
    n = args.per_request
    servers = {  # started first: they load while the photos are made
        mode: Server(args.checkpoint, scale, Path(f"/tmp/decode_size-{scale}.log"))
        for mode, scale in MODES.items()
    }
    times: dict[tuple[str, tuple[int, int]], list[float]] = {}
    try:
        photos = {size: [photo_jpeg(*size, seed=s) for s in range(n)] for size in SIZES}
        for size, jpegs in photos.items():
            kb = statistics.mean(len(j) for j in jpegs) / 1024
            print(f"{size[0]}x{size[1]}: mean {kb:.0f} kB per JPEG", file=sys.stderr)
        for server in servers.values():
            server.wait_ready()
        with httpx.Client(timeout=120.0) as client:
            for r in range(args.rounds + 2):  # the first two rounds warm up
                for size, jpegs in photos.items():
                    for mode, server in servers.items():
                        seconds = post(client, server.url, jpegs)
                        if r >= 2:
                            times.setdefault((mode, size), []).append(seconds)
    finally:
        for server in servers.values():
            server.stop()
    print(f"| decode | photo | median ms per request ({n} images) | vs 640x480 |")
    print("|---|---|---:|---:|")
    for mode in MODES:
        small = statistics.median(times[(mode, SIZES[0])])
        for size in SIZES:
            median = statistics.median(times[(mode, size)])
            print(f"| {mode} | {size[0]}x{size[1]} | {median * 1000:.0f} | {median / small:.2f}x |")


if __name__ == "__main__":
    main()
