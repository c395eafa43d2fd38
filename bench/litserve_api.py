"""The LitServe side of bench/litserve_compare.py: our decode and Engine.predict as a LitAPI.

A module of its own (LitServe starts its inference worker with `spawn`, which pickles the API
by its importable name) that imports LitServe, a bench-only dependency (`bench` extra).
No `from __future__ import annotations` here: LitServe reads `decode_request`'s annotation
at run time, and only the class `Request` itself makes it hand over the parsed form.
"""

from pathlib import Path

import litserve as ls
from fastapi import Request

from app.engine import Engine, Prediction
from app.images import Prepared, prepare
from app.settings import Settings

MAX_PIXELS = 40_000_000  # the service's default VIRALIENCY_MAX_PIXELS


class ViraliencyAPI(ls.LitAPI):  # type: ignore[misc]
    """decode_request: the upload's bytes -> decode + squash; predict: one batched forward."""

    def __init__(self, checkpoint: Path, max_batch_size: int, batch_timeout_s: float) -> None:
        super().__init__(
            max_batch_size=max_batch_size, batch_timeout=batch_timeout_s, api_path="/score"
        )
        self.checkpoint = checkpoint
        self.warm_batch = max_batch_size

    def setup(self, device: str) -> None:
        self.engine = Engine.from_settings(Settings(checkpoint=self.checkpoint, device="cpu"))
        self.engine.warm_up(self.warm_batch)

    def decode_request(self, request: Request) -> Prepared:
        upload = request["images"]  # the FormData LitServe parsed in its HTTP process
        return prepare(upload.file.read(), "images[0]", MAX_PIXELS, self.engine.input_size)

    def predict(self, batch: list[Prepared]) -> list[Prediction]:
        return self.engine.predict([p.pixels for p in batch])

    def encode_response(self, output: Prediction) -> dict[str, float]:
        return {"score": output.score}


def serve(checkpoint: Path, host: str, port: int, max_batch_size: int, wait_ms: float) -> None:
    """Blocks: one HTTP server process and one CPU inference worker (LitServe's defaults)."""
    api = ViraliencyAPI(checkpoint, max_batch_size, wait_ms / 1000.0)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host=host, port=port, generate_client_file=False)
