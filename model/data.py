"""Data layer for training: CSV tables, a disjoint image split, and pair protocols.

The siamese model learns from *pairs* of images ("is a more viral than b?"), but users bring
either per-image virality scores or ready-made labelled pairs. This module reads both formats
with errors that point at the exact CSV row, splits images (not pairs) into train and validation
so that no image leaks across the split, and turns per-image scores into index pairs using the
protocols of Alameda-Pineda et al. (CVPR 2017): median pairs for training, extreme pairs for
testing, plus a ratio protocol that only keeps pairs whose scores clearly differ.

Image decoding lives elsewhere; here images are only checked to exist and to be readable.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

logger = logging.getLogger(__name__)

T = TypeVar("T")

BadImagePolicy = Literal["error", "skip"]
PairProtocol = Literal["median", "ratio"]

_SHOW_FIRST = 5  # how many offending rows an error or warning lists before "..."

DANKMEMES_CSV = "labels.csv"
DANKMEMES_IMAGES = "images"


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
    logger.info("%s: read %d row(s), kept %d", csv_path, len(items), len(kept))
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


DataFormat = Literal["dankmemes", "scores", "pairs"]
DATA_FORMATS: tuple[DataFormat, ...] = ("dankmemes", "scores", "pairs")


def read_data(
    data: Path, data_format: str, on_bad_image: BadImagePolicy = "error"
) -> tuple[list[ScoredImage], list[LabelledPair] | None]:
    """The images (with scores) of any supported layout, and the labelled pairs for `pairs`.

    With a pair CSV the images are those the pairs mention, with score 0 (scores are unused).
    """
    data = Path(data)
    if data_format == "dankmemes":
        return read_dankmemes(data, on_bad_image=on_bad_image), None
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
    return data / DANKMEMES_IMAGES if data_format == "dankmemes" else data.parent


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


# --------------------------------------------------------------------------------------------
# Pair protocols: index pairs (P, 2), column 0 is the more viral image
# --------------------------------------------------------------------------------------------


def _as_scores(scores: ArrayLike) -> NDArray[np.float64]:
    """Validate scores as a 1-D finite array; pair protocols are meaningless otherwise."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError("scores must all be finite")
    return array


def _empty_pairs() -> NDArray[np.int64]:
    return np.zeros((0, 2), dtype=np.int64)


def unused_images(scores: ArrayLike, protocol: PairProtocol, ratio: float = 2.0) -> int:
    """How many images a protocol can never put in a pair: those exactly at the median, or
    those with no partner at least `ratio` apart (after +1, as in ratio_pairs)."""
    values = _as_scores(scores)
    if values.size == 0:
        return 0
    if protocol == "median":
        median = np.median(values)
        return int(np.count_nonzero(values == median))
    index = _ratio_index(values, ratio)
    # Positions are sorted by score and first[i] > i, so sorted position j is the higher image
    # of some pair iff j >= first[0], and the lower image of one iff counts[j] > 0.
    positions = np.arange(values.size)
    paired = (positions >= index.first[0]) | (index.counts > 0)
    return int(values.size - np.count_nonzero(paired))


def median_pairs(scores: ArrayLike, n_pairs: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """The paper's training protocol: one image strictly above the median, one strictly below.

    Both sides are drawn uniformly with replacement, so any number of pairs can be made and
    each epoch sees a fresh sample. Images exactly at the median are never used.
    """
    values = _as_scores(scores)
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    if values.size == 0:
        raise DataError("median pairs need at least 2 images, got none")
    median = np.median(values)
    above = np.flatnonzero(values > median)
    below = np.flatnonzero(values < median)
    if above.size == 0 or below.size == 0:
        raise DataError(
            f"no median pair exists: {above.size} image(s) above and {below.size} below the "
            f"median {median:g} (are all scores equal?)"
        )
    return np.stack(
        [rng.choice(above, size=n_pairs), rng.choice(below, size=n_pairs)], axis=1
    ).astype(np.int64)


def extreme_pairs(scores: ArrayLike, k: int) -> NDArray[np.int64]:
    """The paper's test protocol: every (top-k, bottom-k) pair, k clipped to len(scores) // 2.

    Deterministic: top-k and bottom-k are the two ends of one stable ascending sort, so they
    never share an image. Pairs whose two scores are equal, possible only when ties straddle
    both ends, are dropped since neither is more viral; with distinct scores there are exactly
    k * k pairs.
    """
    values = _as_scores(scores)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, values.size // 2)
    if k == 0:
        raise DataError(f"extreme pairs need at least 2 images, got {values.size}")
    order = np.argsort(values, kind="stable")
    top, bottom = order[::-1][:k], order[:k]
    pairs = np.stack(np.meshgrid(top, bottom, indexing="ij"), axis=-1).reshape(-1, 2)
    pairs = pairs[values[pairs[:, 0]] > values[pairs[:, 1]]]
    if pairs.shape[0] == 0:
        raise DataError(f"no extreme pair exists: the top-{k} and bottom-{k} scores are equal")
    return pairs.astype(np.int64)


@dataclass(frozen=True)
class _RatioIndex:
    """All ratio pairs, implicitly: for the i-th lowest image, every image from `first[i]` on.

    Keeping the pairs as runs over the sorted order lets us count and sample them in O(n)
    memory instead of listing up to n^2 pairs.
    """

    order: NDArray[np.intp]  # image indices by ascending score
    first: NDArray[np.intp]  # per sorted position i: first sorted position j with a valid pair
    counts: NDArray[np.int64]  # per sorted position i: number of valid partners
    ends: NDArray[np.int64] = field(repr=False)  # cumulative counts


def _ratio_index(values: NDArray[np.float64], ratio: float) -> _RatioIndex:
    counts_plus_one = values + 1.0
    order = np.argsort(counts_plus_one, kind="stable")
    ascending = counts_plus_one[order]
    first = np.searchsorted(ascending, ratio * ascending, side="left")
    counts = (values.size - first).astype(np.int64)
    return _RatioIndex(order, first, counts, np.cumsum(counts))


def _ratio_pairs_at(index: _RatioIndex, flat: NDArray[np.int64]) -> NDArray[np.int64]:
    """Map flat pair numbers in [0, total) to (more viral, less viral) image index pairs."""
    low_pos = np.searchsorted(index.ends, flat, side="right")
    high_pos = index.first[low_pos] + (flat - (index.ends[low_pos] - index.counts[low_pos]))
    return np.stack([index.order[high_pos], index.order[low_pos]], axis=1).astype(np.int64)


def ratio_pairs(
    scores: ArrayLike,
    ratio: float = 2.0,
    n_pairs: int | None = None,
    rng: np.random.Generator | None = None,
) -> NDArray[np.int64]:
    """Pairs whose scores clearly differ: (hi + 1) >= ratio * (lo + 1).

    Scores are treated as counts (likes, shares), and the +1 lets an image with zero
    engagement pair with one that has some instead of making every ratio infinite or undefined;
    so scores must be >= 0. With `n_pairs=None` all such pairs are returned, sorted; otherwise
    `n_pairs` are drawn uniformly with replacement from that set without listing it.
    """
    values = _as_scores(scores)
    if not ratio > 1.0:
        raise ValueError(f"ratio must be > 1 so that pairs differ, got {ratio}")
    if values.size and values.min() < 0:
        raise DataError(
            f"ratio pairs treat scores as counts and need scores >= 0, got {values.min():g}"
        )
    index = _ratio_index(values, ratio)
    total = int(index.ends[-1]) if values.size else 0
    if total == 0:
        raise DataError(
            f"no pair of scores differs by a factor {ratio:g} (after +1); lower the ratio"
        )
    if n_pairs is None:
        n_unused = unused_images(values, "ratio", ratio)
        if n_unused:
            logger.info(
                "ratio pairs: %d of %d image(s) have no partner at least %gx apart and are unused",
                n_unused,
                values.size,
                ratio,
            )
        pairs = _ratio_pairs_at(index, np.arange(total, dtype=np.int64))
        return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    if rng is None:
        raise ValueError("ratio_pairs needs an rng when n_pairs is given")
    if n_pairs == 0:
        return _empty_pairs()
    return _ratio_pairs_at(index, rng.integers(0, total, size=n_pairs, dtype=np.int64))


def orient_pairs(
    pairs: ArrayLike, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Swap exactly half of the pairs (floor(P/2)) at random and label them.

    Protocols put the more viral image first; fed as-is the model could learn the position.
    Returns the (a, b) index array and float32 labels, 1.0 where a is the more viral image.
    Swapping exactly half also balances the labels.
    """
    array = np.asarray(pairs)
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"pairs must be an integer array of shape (P, 2), got {array.shape}")
    n = array.shape[0]
    swap = rng.permutation(n) < n // 2
    oriented = array.astype(np.int64, copy=True)
    oriented[swap] = oriented[swap, ::-1]
    return oriented, (~swap).astype(np.float32)


def to_labelled_pairs(
    images: Sequence[ScoredImage], pairs: ArrayLike, rng: np.random.Generator
) -> list[LabelledPair]:
    """Turn protocol index pairs into LabelledPair rows, randomly oriented (see orient_pairs)."""
    oriented, labels = orient_pairs(pairs, rng)
    return [
        LabelledPair(images[a].path, images[b].path, int(label))
        for (a, b), label in zip(oriented.tolist(), labels.tolist(), strict=True)
    ]


# --------------------------------------------------------------------------------------------
# Fresh pairs per epoch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PairSampler:
    """Draws fresh, randomly oriented training pairs each epoch, reproducibly.

    Epoch e uses default_rng([seed, e]), so any epoch can be regenerated (e.g. when resuming)
    without replaying the earlier ones.
    """

    scores: NDArray[np.float64]
    protocol: PairProtocol = "median"
    ratio: float = 2.0
    pairs_per_epoch: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate now, so a bad dataset fails at start-up rather than mid-training."""
        if self.protocol not in ("median", "ratio"):
            raise ValueError(f"protocol must be 'median' or 'ratio', got {self.protocol!r}")
        if self.pairs_per_epoch < 1:
            raise ValueError(f"pairs_per_epoch must be >= 1, got {self.pairs_per_epoch}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        scores = _as_scores(self.scores).copy()
        scores.flags.writeable = False  # the sampler's pairs must not change under it
        object.__setattr__(self, "scores", scores)
        self.epoch(0)
        n_unused = unused_images(scores, self.protocol, self.ratio)
        why = (
            "at the median"
            if self.protocol == "median"
            else f"without a partner {self.ratio:g}x apart"
        )
        logger.info(
            "%s pairs: %d of %d training image(s) are %s and never used",
            self.protocol,
            n_unused,
            scores.size,
            why,
        )

    def epoch(self, e: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Oriented index pairs (P, 2) and float32 labels (P,) for epoch `e` (>= 0)."""
        if e < 0:
            raise ValueError(f"epoch must be >= 0, got {e}")
        rng = np.random.default_rng([self.seed, e])
        if self.protocol == "median":
            pairs = median_pairs(self.scores, self.pairs_per_epoch, rng)
        else:
            pairs = ratio_pairs(self.scores, self.ratio, self.pairs_per_epoch, rng)
        return orient_pairs(pairs, rng)


# --------------------------------------------------------------------------------------------
# Ready-made labelled pairs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FixedPairs:
    """A user's labelled pairs, reshuffled and re-oriented each epoch (same interface as
    PairSampler). `pairs` holds indices with the more viral image first."""

    pairs: NDArray[np.int64]
    seed: int = 0

    def epoch(self, e: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        rng = np.random.default_rng([self.seed, e])
        return orient_pairs(self.pairs[rng.permutation(len(self.pairs))], rng)


def index_pairs(
    pairs: Sequence[LabelledPair], images: Sequence[Path]
) -> tuple[NDArray[np.int64], int]:
    """Labelled pairs as (P, 2) indices into `images`, more viral first; pairs with an image
    outside `images` (the other side of a split) are dropped and counted."""
    where = {path: i for i, path in enumerate(images)}
    kept = [
        (where[p.path_a], where[p.path_b]) if p.label else (where[p.path_b], where[p.path_a])
        for p in pairs
        if p.path_a in where and p.path_b in where
    ]
    return np.asarray(kept, dtype=np.int64).reshape(-1, 2), len(pairs) - len(kept)
