"""Score rows to a terminal table, a CSV or a JSON-lines file; what an --out file already has.

Rows are appended and flushed batch by batch, so an interrupted run leaves every finished
batch on disk, and running the same command again skips the paths already there.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import click

FIELDS = ("path", "image_id", "score", "percentile")
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


@dataclass(frozen=True)
class Row:
    path: str
    image_id: str  # hex SHA-256 of the file
    score: float  # raw s(I)
    percentile: float | None  # 0-100 among the checkpoint's calibration images


def out_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise click.BadParameter(
            f"{path}: the name must end in .csv or .jsonl", param_hint="--out"
        ) from None


def done_paths(path: Path) -> set[str]:
    """The paths an existing --out file already holds (an unfinished last line is ignored)."""
    if not path.exists():
        return set()
    with path.open(newline="", encoding="utf-8") as f:
        if out_format(path) == "csv":
            return {row["path"] for row in csv.DictReader(f) if row.get("score")}
        done = set()
        for line in f:
            try:
                done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by an interruption: that image is scored again
        return done


class RowWriter:
    """Appends rows to --out in its format; a new or empty file gets the CSV header first."""

    def __init__(self, path: Path) -> None:
        self.format = out_format(path)
        fresh = not path.exists() or path.stat().st_size == 0
        if not fresh:
            _end_last_line(path)
        self._file: IO[str] = path.open("a", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, FIELDS, lineterminator="\n")
        if fresh and self.format == "csv":
            self._csv.writeheader()

    def write(self, rows: list[Row]) -> None:
        for row in rows:
            if self.format == "csv":
                self._csv.writerow(asdict(row))
            else:
                self._file.write(json.dumps(asdict(row)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _end_last_line(path: Path) -> None:
    """A file cut short mid-line gets a newline, so the next row starts on its own line."""
    with path.open("rb+") as f:
        f.seek(-1, 2)
        if f.read(1) != b"\n":
            f.write(b"\n")


def table(rows: list[Row]) -> str:
    """A plain text table, one row per image (image_id shortened to 12 hex digits)."""
    lines = [("path", "image_id", "score", "percentile")]
    for row in rows:
        pct = "-" if row.percentile is None else f"{row.percentile:.1f}"
        lines.append((row.path, row.image_id[:12], f"{row.score:.4f}", pct))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}"
        for a, b, c, d in lines
    )
