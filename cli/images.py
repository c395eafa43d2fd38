"""One image file -> the network's input, with the service's own decoder (app.images)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from app.errors import ApiError
from app.images import Prepared, prepare


class BadImageError(Exception):
    """A file that cannot be scored: unreadable, not an image, corrupt or too large."""


@dataclass(frozen=True)
class Loaded:
    path: str  # as listed (the key --out resumes by)
    image_id: str  # hex SHA-256 of the file's bytes, as POST /score names it
    data: bytes
    prepared: Prepared


def load(path: str, size: int, max_pixels: int) -> Loaded:
    """Read, check and squash one file; blocking (runs in a worker thread)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadImageError(f"cannot read it ({exc.strerror or exc})") from None
    try:
        prepared = prepare(data, path, max_pixels, size)
    except ApiError as exc:
        raise BadImageError(f"{exc.code}: {exc.message}") from None
    return Loaded(path, hashlib.sha256(data).hexdigest(), data, prepared)


def load_or_fail(path: str, size: int, max_pixels: int) -> Loaded:
    """`load` for the single-image commands: a bad file ends the command (exit 1)."""
    import click

    try:
        return load(path, size, max_pixels)
    except BadImageError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
