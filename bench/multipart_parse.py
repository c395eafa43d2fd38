"""Parsing a multipart body of eight 12 MP photos: Starlette spooling files to disk vs in memory.

    .venv/bin/python -m bench.multipart_parse --reps 8

Feeds one multipart body (bench/decode_size.py's 4032x3024 JPEGs, 27.7 MB) to Starlette's
`Request.form()` in 64 KiB chunks, as uvicorn delivers it, and reads every file back, as
`app.uploads.read_upload` does; once with Starlette's default spool size (each file over 1 MiB
goes to a temporary file) and once with files kept in memory (what `app.uploads` sets).
Interleaved; prints the median ms of each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.types import Message

from bench.decode_size import photo_jpeg

BOUNDARY = b"bench-boundary-7e3f"
CHUNK = 64 * 1024
STARLETTE_DEFAULT = 1024 * 1024


def body(photos: list[bytes]) -> bytes:
    head = b'Content-Disposition: form-data; name="images"; filename="p.jpg"\r\n'
    head += b"Content-Type: image/jpeg\r\n\r\n"
    parts = [b"--" + BOUNDARY + b"\r\n" + head + photo + b"\r\n" for photo in photos]
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


async def parse_and_read(data: bytes, expected: list[bytes]) -> float:
    chunks = iter([data[i : i + CHUNK] for i in range(0, len(data), CHUNK)])

    async def receive() -> Message:
        chunk = next(chunks, b"")
        return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

    content_type = b"multipart/form-data; boundary=" + BOUNDARY
    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type)]}
    request = Request(scope, receive)
    started = time.perf_counter()
    form = await request.form(max_files=64)
    files = [await upload.read() for upload in form.getlist("images")]  # type: ignore[union-attr]
    seconds = time.perf_counter() - started
    await form.close()
    if files != expected:
        raise RuntimeError("the parsed files differ from the photos sent")
    return seconds


async def run(reps: int) -> None:
    photos = [photo_jpeg(4032, 3024, seed=s) for s in range(8)]
    data = body(photos)
    modes = {"spooled to disk (Starlette's default)": STARLETTE_DEFAULT, "in memory": sys.maxsize}
    times: dict[str, list[float]] = {name: [] for name in modes}
    saved = MultiPartParser.spool_max_size
    try:
        for _ in range(reps + 1):  # the first round a warm-up
            for name, spool in modes.items():
                MultiPartParser.spool_max_size = spool
                times[name].append(await parse_and_read(data, photos))
    finally:
        MultiPartParser.spool_max_size = saved
    print(f"{len(data) / 1e6:.1f} MB body, 8 files; median of {reps}:")
    for name, seconds in times.items():
        print(f"- {name}: {statistics.median(seconds[1:]) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=8)
    asyncio.run(run(parser.parse_args().reps))


if __name__ == "__main__":
    main()
