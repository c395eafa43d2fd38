"""Data layer for training: CSV tables and a disjoint image split.

The siamese model learns from *pairs* of images ("is a more viral than b?"), but users bring
either per-image virality scores or ready-made labelled pairs. This module reads both formats
with errors that point at the exact CSV row, and splits images (not pairs) into train and
validation so that no image leaks across the split. `training.pairs` turns the scores into pairs.

Images are checked here (they exist, lie inside the data folder and decode fully); turning them
into network inputs lives in `training.views` and `training.cache`.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

logger = logging.getLogger(__name__)

T = TypeVar("T")

BadImagePolicy = Literal["error", "skip"]

_SHOW_FIRST = 5  # how many offending rows an error or warning lists before "..."

DANKMEMES_CSV = "labels.csv"
DANKMEMES_IMAGES = "images"
REDDIT_SCORE = "Upvotes"  # the Reddit memes set: labels.csv (File, Upvotes, Created) + images/

# What a checkpoint records about the data it was fitted on, per layout (its `data_format`).
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "dankmemes": {
        "name": "DANKMEMES 2020 task 1 training images (1,280 of 1,600)",
        "engagement": "likes + comments of the Instagram post (Italian political memes, 2019)",
        "licence": "CC BY-NC-ND 4.0: non-commercial use only",
        "citation": "Miliani et al., DANKMEMES @ EVALITA 2020",
        "platform": "instagram",
    },
    "reddit": {
        "name": "Reddit memes 2016-2018 (1,900 of 2,380 images)",
        "engagement": "upvotes of the Reddit post (English memes, Aug 2016 - Apr 2018)",
        "licence": "unknown (third-party Reddit posts): research and evaluation use only",
        "citation": "Kaggle 'reddit-memes-dataset' (sayangoswami), via "
        "stella-lu/meme-popularity-classifier-sofia-fall-2025@3a35221",
        "platform": "reddit",
    },
}


class DataError(ValueError):
    """A problem with the user's data (not with the caller's arguments), worded for the user."""


@dataclass(frozen=True)
class ScoredImage:
    """One image with its virality score; `path` is absolute so it survives a change of cwd."""

    path: Path
    score: float


@dataclass(frozen=True)
class LabelledPair:
    """Two images and whether the first is the more viral one (label 1) or not (label 0)."""

    path_a: Path
    path_b: Path
    label: int


# --------------------------------------------------------------------------------------------
# CSV reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BadImage:
    """An image a CSV row points at that cannot be used, kept to report or skip it."""

    row: int
    path: Path
    reason: str


def _read_table(csv_path: Path, expected: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Read a CSV into (row number, record) pairs after checking the expected columns exist.

    Row numbers count records, with the header as row 1, so the first data row is row 2; this
    matches what a spreadsheet shows, which is where users will look for the bad row.
    """
    try:
        # utf-8-sig: spreadsheets often save a byte-order mark that would rename the 1st column.
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{csv_path}: the file is empty; expected a header row")
            header = [name.strip() for name in header]
            missing = [name for name in expected if name not in header]
            if missing:
                raise DataError(
                    f"{csv_path}: missing column(s) {missing}; found columns {header}, "
                    f"expected at least {list(expected)}"
                )
            index = {name: header.index(name) for name in expected}
            records: list[tuple[int, dict[str, str]]] = []
            for row_number, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue  # blank lines carry no data; an editor often adds one at the end
                records.append(
                    (row_number, {n: row[i] if i < len(row) else "" for n, i in index.items()})
                )
    except FileNotFoundError as exc:
        raise DataError(f"{csv_path}: CSV file not found") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot be parsed as a UTF-8 CSV file: {exc}") from exc
    return records


def _parse_path(raw: str, image_root: Path, csv_path: Path, row: int, column: str) -> Path:
    """Resolve a CSV path cell against the image root; an empty cell is a bad row.

    The path must stay inside the root: the checkpoint records its split by names relative to
    it, so an image outside (`../x.png`, an absolute path elsewhere) could never be recorded,
    and the run would fail only after training, when the checkpoint is written.
    """
    text = raw.strip()
    if not text:
        raise DataError(f"{csv_path}, row {row}: empty path in column {column!r}")
    root = image_root.resolve()
    path = (root / text).resolve()
    if not path.is_relative_to(root):
        raise DataError(
            f"{csv_path}, row {row}: path {text!r} in column {column!r} points outside {root}; "
            f"image paths must lie in that folder (or below it): move the image there"
        )
    return path


def _parse_score(raw: str, csv_path: Path, row: int, column: str) -> float:
    """Parse a score cell; any finite number is accepted since virality units vary."""
    try:
        value = float(raw.strip())
    except ValueError:
        raise DataError(
            f"{csv_path}, row {row}: score {raw!r} in column {column!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"{csv_path}, row {row}: score {raw!r} in column {column!r} is not finite")
    return value


def _parse_label(raw: str, csv_path: Path, row: int) -> int:
    """Parse a pair label; '1.0' is accepted because pandas writes integer columns that way."""
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):
        raise DataError(
            f"{csv_path}, row {row}: label {raw!r} must be 1 (a more viral) or 0 (b more viral)"
        )
    return int(value)


def _image_problem(path: Path, check_images: bool) -> str | None:
    """Why an image cannot be used, or None. Existence is always checked since it is cheap."""
    if not path.is_file():
        return "missing"
    if not check_images:
        return None
    try:
        with Image.open(path) as image:
            # A full decode: verify() only checks the structure and lets a truncated JPEG
            # through, which would then fail mid-run when its views are rendered.
            image.load()
    except Exception as exc:  # PIL raises many exception types for corrupt files
        return f"unreadable: {type(exc).__name__}: {exc}"
    return None


def _describe_bad(bad: Sequence[_BadImage]) -> str:
    """List the first few bad images as 'row N: path (reason)' for an error or a warning."""
    shown = "; ".join(f"row {b.row}: {b.path} ({b.reason})" for b in bad[:_SHOW_FIRST])
    return shown + ("; ..." if len(bad) > _SHOW_FIRST else "")


def _filter_rows(
    csv_path: Path,
    items: Sequence[tuple[int, T]],
    paths_of: Callable[[T], Sequence[Path]],
    check_images: bool,
    on_bad_image: BadImagePolicy,
) -> list[T]:
    """Apply the bad-image policy: raise on any bad image, or drop its rows with a warning.

    Every drop is counted and logged so that nothing disappears silently.
    """
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    problems: dict[Path, str | None] = {}  # one check per file even if many pairs share it
    bad: list[_BadImage] = []
    kept: list[T] = []
    for row, item in items:
        row_ok = True
        for path in paths_of(item):
            if path not in problems:
                problems[path] = _image_problem(path, check_images)
            reason = problems[path]
            if reason is not None:
                bad.append(_BadImage(row, path, reason))
                row_ok = False
        if row_ok:
            kept.append(item)
    n_bad_rows = len(items) - len(kept)
    if bad and on_bad_image == "error":
        raise DataError(
            f"{csv_path}: {len(bad)} image reference(s) in {n_bad_rows} row(s) are missing or "
            f"unreadable: {_describe_bad(bad)}. Fix them or pass on_bad_image='skip'."
        )
    if bad:
        logger.warning(
            "%s: skipped %d of %d row(s) with missing or unreadable images: %s",
            csv_path,
            n_bad_rows,
            len(items),
            _describe_bad(bad),
        )
    logger.info(
        "%s: read %d row(s): used %d, skipped %d", csv_path, len(items), len(kept), n_bad_rows
    )
    if items and not kept:
        raise DataError(f"{csv_path}: no usable rows left after skipping bad images")
    return kept


def _read_scores(
    csv_path: Path,
    *,
    path_column: str,
    score_column: str,
    check_images: bool,
    on_bad_image: BadImagePolicy,
    image_root: Path | None,
) -> list[ScoredImage]:
    """Shared reader for every per-image score table, whatever its column names and layout."""
    root = csv_path.parent if image_root is None else image_root
    records = _read_table(csv_path, [path_column, score_column])
    if not records:
        raise DataError(f"{csv_path}: no data rows after the header")
    parsed: list[tuple[int, ScoredImage]] = []
    first_row: dict[Path, int] = {}
    for row, record in records:
        path = _parse_path(record[path_column], root, csv_path, row, path_column)
        score = _parse_score(record[score_column], csv_path, row, score_column)
        if path in first_row:
            # A repeated image would make a split by image leak it into both sides.
            raise DataError(
                f"{csv_path}, row {row}: image {path} already listed at row {first_row[path]}"
            )
        first_row[path] = row
        parsed.append((row, ScoredImage(path, score)))
    return _filter_rows(csv_path, parsed, lambda im: (im.path,), check_images, on_bad_image)


def read_scores_csv(
    csv_path: Path,
    *,
    path_column: str = "path",
    score_column: str = "score",
    check_images: bool = True,
    on_bad_image: BadImagePolicy = "error",
) -> list[ScoredImage]:
    """Read a per-image score table (`path,score`), paths relative to the CSV's folder.

    Raises DataError naming the file and row for a missing column, an empty path, a score that
    is not a finite number, a repeated image, or (policy 'error') missing/unreadable images.
    `check_images=False` still checks that files exist but skips opening them.
    """
    return _read_scores(
        Path(csv_path),
        path_column=path_column,
        score_column=score_column,
        check_images=check_images,
        on_bad_image=on_bad_image,
        image_root=None,
    )


def read_pairs_csv(
    csv_path: Path,
    *,
    check_images: bool = True,
    on_bad_image: BadImagePolicy = "error",
) -> list[LabelledPair]:
    """Read a labelled pair table (`path_a,path_b,label`), label 1 when a is more viral.

    Errors and the bad-image policy are as in read_scores_csv; a pair is dropped (policy
    'skip') when either of its images is bad.
    """
    csv_path = Path(csv_path)
    root = csv_path.parent
    records = _read_table(csv_path, ["path_a", "path_b", "label"])
    if not records:
        raise DataError(f"{csv_path}: no data rows after the header")
    parsed: list[tuple[int, LabelledPair]] = []
    for row, record in records:
        path_a = _parse_path(record["path_a"], root, csv_path, row, "path_a")
        path_b = _parse_path(record["path_b"], root, csv_path, row, "path_b")
        label = _parse_label(record["label"], csv_path, row)
        if path_a == path_b:
            raise DataError(
                f"{csv_path}, row {row}: path_a and path_b are the same image {path_a}; a pair "
                f"compares two different images: fix or remove the row"
            )
        parsed.append((row, LabelledPair(path_a, path_b, label)))
    return _filter_rows(
        csv_path, parsed, lambda p: (p.path_a, p.path_b), check_images, on_bad_image
    )


def read_dankmemes(
    folder: Path,
    check_images: bool = True,
    *,
    on_bad_image: BadImagePolicy = "error",
) -> list[ScoredImage]:
    """Read the DANKMEMES 2020 task 1 set: `labels.csv` (File, Engagement) and `images/`.

    Engagement (likes + comments) is the virality score. Uses the same reader as
    read_scores_csv so both get the same checks and messages.
    """
    folder = Path(folder)
    return _read_scores(
        folder / DANKMEMES_CSV,
        path_column="File",
        score_column="Engagement",
        check_images=check_images,
        on_bad_image=on_bad_image,
        image_root=folder / DANKMEMES_IMAGES,
    )


# ViralNet-C's categories on DANKMEMES (training/categories.py): each 0/1, from its columns Meme,
# Manipulation, and Visual (the names of the people shown, "0" when none).
DANKMEMES_CATEGORIES = ("meme", "manipulation", "people")


def read_dankmemes_categories(folder: Path, paths: Sequence[Path]) -> np.ndarray:
    """The DANKMEMES category labels of `paths` (images of `folder`), in their order.
    -> (N, 3) float 0/1 in the order of DANKMEMES_CATEGORIES."""
    folder = Path(folder)
    csv_path = folder / DANKMEMES_CSV
    by_name: dict[str, list[float]] = {}
    for row, record in _read_table(csv_path, ["File", "Meme", "Manipulation", "Visual"]):
        try:
            meme, manipulation = (int(record[c].strip()) for c in ("Meme", "Manipulation"))
        except ValueError as exc:
            raise DataError(f"{csv_path}, row {row}: Meme and Manipulation must be 0 or 1") from exc
        people = record["Visual"].strip() not in ("", "0")
        by_name[record["File"].strip()] = [float(meme), float(manipulation), float(people)]
    images = (folder / DANKMEMES_IMAGES).resolve()
    try:
        return np.array([by_name[Path(p).resolve().relative_to(images).as_posix()] for p in paths])
    except (KeyError, ValueError) as exc:
        raise DataError(f"{csv_path}: no category labels for an image: {exc}") from exc


def read_reddit(
    folder: Path,
    check_images: bool = True,
    *,
    on_bad_image: BadImagePolicy = "error",
) -> list[ScoredImage]:
    """Read the Reddit memes 2016-2018 set: `labels.csv` (File, Upvotes) and `images/`.

    The upvote count is the virality score; same checks, messages and bad-image policy as
    read_dankmemes (the log says how many rows were read, kept and skipped).
    """
    folder = Path(folder)
    return _read_scores(
        folder / DANKMEMES_CSV,
        path_column="File",
        score_column=REDDIT_SCORE,
        check_images=check_images,
        on_bad_image=on_bad_image,
        image_root=folder / DANKMEMES_IMAGES,
    )


DataFormat = Literal["dankmemes", "reddit", "scores", "pairs"]
DATA_FORMATS: tuple[DataFormat, ...] = ("dankmemes", "reddit", "scores", "pairs")


def read_data(
    data: Path, data_format: str, on_bad_image: BadImagePolicy = "error"
) -> tuple[list[ScoredImage], list[LabelledPair] | None]:
    """The images (with scores) of any supported layout, and the labelled pairs for `pairs`.

    With a pair CSV the images are those the pairs mention, with score 0 (scores are unused).
    """
    data = Path(data)
    if data_format == "dankmemes":
        return read_dankmemes(data, on_bad_image=on_bad_image), None
    if data_format == "reddit":
        return read_reddit(data, on_bad_image=on_bad_image), None
    if data_format == "scores":
        return read_scores_csv(data, on_bad_image=on_bad_image), None
    if data_format == "pairs":
        pairs = read_pairs_csv(data, on_bad_image=on_bad_image)
        paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
        return [ScoredImage(path, 0.0) for path in paths], pairs
    raise ValueError(f"unknown data format {data_format!r}; choose one of {list(DATA_FORMATS)}")


def split_root(data: Path, data_format: str) -> Path:
    """The folder a split's image names are relative to: `images/` or the CSV's folder."""
    data = Path(data)
    return data / DANKMEMES_IMAGES if data_format in ("dankmemes", "reddit") else data.parent


def scores_array(images: Sequence[ScoredImage]) -> NDArray[np.float64]:
    """The scores of `images` as a float64 array, aligned with the list, for the pair protocols."""
    return np.array([image.score for image in images], dtype=np.float64).reshape(len(images))


# --------------------------------------------------------------------------------------------
# Train/validation split by image
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """A disjoint train/validation split of images, with what is needed to reproduce it."""

    train: tuple[ScoredImage, ...]
    val: tuple[ScoredImage, ...]
    seed: int
    val_fraction: float

    def to_json(self, root: Path) -> dict[str, Any]:
        """File names of each side relative to `root`, so a checkpoint can record its split.

        Relative names keep the record valid when the data folder moves to another machine.
        """
        return {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "train": [_relative_name(image.path, root) for image in self.train],
            "val": [_relative_name(image.path, root) for image in self.val],
        }


def _relative_name(path: Path, root: Path) -> str:
    """POSIX path of `path` relative to `root`; an image outside root cannot be recorded."""
    try:
        return path.relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        raise DataError(f"image {path} is not inside the split root {root}") from None


def _check_unique(images: Sequence[ScoredImage]) -> None:
    """Refuse repeated paths: the same image on both sides of a split would leak."""
    seen: set[Path] = set()
    for image in images:
        if image.path in seen:
            raise DataError(f"image {image.path} appears more than once")
        seen.add(image.path)


def split_by_image(
    images: Sequence[ScoredImage], val_fraction: float = 0.15, seed: int = 0
) -> Split:
    """Split images (not pairs) into train and validation so no image is seen on both sides.

    The validation size is round-half-up(val_fraction * n), kept within [1, n - 1] so neither
    side is empty. Images are sorted by path before a PCG64(seed) permutation, so the result
    depends only on the set of images and the seed, not on the order they were read in. Each
    side is returned sorted by path.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(images)
    if n < 2:
        raise DataError(f"need at least 2 images to split, got {n}")
    _check_unique(images)
    ordered = sorted(images, key=lambda image: str(image.path))
    n_val = min(max(math.floor(val_fraction * n + 0.5), 1), n - 1)
    permutation = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    is_val = np.zeros(n, dtype=bool)
    is_val[permutation[:n_val]] = True
    return Split(
        train=tuple(image for image, v in zip(ordered, is_val, strict=True) if not v),
        val=tuple(image for image, v in zip(ordered, is_val, strict=True) if v),
        seed=seed,
        val_fraction=val_fraction,
    )


def split_from_json(d: Mapping[str, Any], images: Sequence[ScoredImage], root: Path) -> Split:
    """Rebuild a Split recorded by Split.to_json(root) from freshly read images.

    Scores come from `images` (the current table). Every recorded name must be found; images
    that are in neither side (added since) are left out with a warning.
    """
    try:
        seed = int(d["seed"])
        val_fraction = float(d["val_fraction"])
        train_names = [str(name) for name in d["train"]]
        val_names = [str(name) for name in d["val"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"not a recorded split (keys seed, val_fraction, train, val): {exc}"
        ) from exc
    overlap = set(train_names) & set(val_names)
    if overlap:
        raise DataError(f"recorded split is not disjoint: {sorted(overlap)[:_SHOW_FIRST]}")
    _check_unique(images)
    by_name = {_relative_name(image.path, root): image for image in images}
    unknown = [name for name in train_names + val_names if name not in by_name]
    if unknown:
        raise DataError(
            f"{len(unknown)} image(s) of the recorded split are not among the given images "
            f"under {root}: {unknown[:_SHOW_FIRST]}"
        )
    n_unused = len(by_name) - len(train_names) - len(val_names)
    if n_unused:
        logger.warning("%d image(s) are in neither side of the recorded split", n_unused)
    return Split(
        train=tuple(by_name[name] for name in train_names),
        val=tuple(by_name[name] for name in val_names),
        seed=seed,
        val_fraction=val_fraction,
    )
