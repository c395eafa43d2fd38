"""The forward pass in a process of its own (LitServe's layout), behind `Engine`'s methods.

    batcher thread --(uint8 batch, pickled over a pipe)--> inference process: Engine.predict
                   <--(Predictions)----------------------

With `VIRALIENCY_INFERENCE_PROCESS` on (the default on the CPU), the service starts one child
process that loads the checkpoint with the same settings and runs every batch; the HTTP
process keeps admission, deadlines, decoding, metrics and the heatmap store, and a copy of
the network (one torch thread) only for `/regions`. The child's torch ops then never wait for
the HTTP process's GIL (bench/gil_handoffs.py: 3.8-6.9x slower forward passes beside a busy
Python thread). Measured on 2 cores: bench/RESULTS.md, "Process layout".

A child that dies (killed, out of memory) is replaced, and the call it held is tried once
more in the new one: accepted requests get an answer, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from app.settings import Settings

if TYPE_CHECKING:
    from app.engine import Prediction

log = logging.getLogger(__name__)


class Forward(Protocol):
    """What runs the service's batches: an `Engine` in this process, or an `EngineProcess`."""

    def predict(
        self, images: list[NDArray[np.uint8]], yield_cores: int = 0
    ) -> list[Prediction]: ...

    def batch_rates(self, largest: int) -> dict[int, float]: ...

    def warm_up(self, batch_size: int) -> float: ...


class InferenceProcessError(RuntimeError):
    """The inference process died or could not start."""


def _serve(conn: Connection, settings: Settings) -> None:
    """The child: load the engine, then answer (method, args) calls until told to stop."""
    # The parent drains on SIGINT / SIGTERM (a terminal's Ctrl-C reaches the whole process
    # group), then stops us; if the parent dies, our end of the pipe closes and we exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from app.engine import Engine  # torch is imported here, in the child only

    try:
        engine = Engine.from_settings(settings)
    except Exception as exc:  # the parent raises it
        conn.send(("error", InferenceProcessError(f"loading the checkpoint failed: {exc!r}")))
        return
    conn.send(("ok", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        name, args = message
        try:
            result = getattr(engine, name)(*args)
        except Exception as exc:  # sent back, raised there
            conn.send(("error", exc))
        else:
            conn.send(("ok", result))


class EngineProcess:
    """`predict`, `batch_rates` and `warm_up` of an Engine living in a child process. One
    call at a time (a lock): the batcher's thread is the only caller once serving."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        self.restarts = 0
        self._closed = False  # after close(): a dead child is not replaced
        self._start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _start(self) -> None:
        started = time.perf_counter()
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_serve, args=(child, self.settings), name="viraliency-inference", daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        self._receive()  # "ready", or the loading error
        log.info(
            "inference process started",
            extra={
                "event": "inference_process",
                "pid": self._process.pid,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    def _receive(self) -> Any:
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:  # the child died: its end of the pipe closed
            self._process.join(timeout=5)
            code = self._process.exitcode
            raise InferenceProcessError(f"the inference process exited (code {code})") from exc
        if status == "error":
            raise value
        return value

    def call(self, name: str, *args: Any) -> Any:
        """engine.name(*args) in the child. A child found dead is replaced first; one that
        dies during the call is replaced and the call tried once more there, so a killed
        child costs its batch a restart, not an error (a second death raises)."""
        with self._lock:
            for attempt in (1, 2):
                if not self._process.is_alive():
                    self._restart()
                try:
                    self._conn.send((name, args))
                    return self._receive()
                except (InferenceProcessError, BrokenPipeError):
                    if attempt == 2 or self._process.is_alive():
                        raise
            raise AssertionError("unreachable")

    def _restart(self) -> None:
        if self._closed:
            raise InferenceProcessError("the inference process was stopped (shutdown)")
        self.restarts += 1
        log.error(
            "inference process died; starting another",
            extra={"event": "inference_process_restart", "exitcode": self._process.exitcode},
        )
        self._conn.close()
        self._start()

    def predict(self, images: list[NDArray[np.uint8]], yield_cores: int = 0) -> list[Prediction]:
        return list(self.call("predict", images, yield_cores))

    def batch_rates(self, largest: int) -> dict[int, float]:
        return dict(self.call("batch_rates", largest))

    def warm_up(self, batch_size: int) -> float:
        return float(self.call("warm_up", batch_size))

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to stop; kill it if it does not within `timeout`, or if a call still
        holds it then (a drain that timed out: its batch gets the 500 of a dead child)."""
        self._closed = True
        idle = self._lock.acquire(timeout=timeout)
        try:
            if idle and self._process.is_alive():
                with contextlib.suppress(OSError):
                    self._conn.send(None)
                self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        finally:
            if idle:
                self._conn.close()
                self._lock.release()
