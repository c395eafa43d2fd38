"""A tiny real checkpoint and real image files on disk for the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.imaging import jpeg
from tests.cli.tiny import write_tiny_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """shots/: a.jpg, b.jpg, nested/c.jpg, nested/d.JPEG, and notes.txt (not an image)."""
    folder = tmp_path / "shots"
    (folder / "nested").mkdir(parents=True)
    for seed, name in enumerate(["a.jpg", "b.jpg", "nested/c.jpg", "nested/d.JPEG"]):
        (folder / name).write_bytes(jpeg(96 + 8 * seed, 72, seed=seed))
    (folder / "notes.txt").write_text("not an image\n")
    return folder
