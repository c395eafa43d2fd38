"""k-fold cross-validation by image: disjoint test folds that together cover every image.

    fold(i) = the i-th block of a PCG64(seed) permutation of the images sorted by path,
    block sizes differing by at most one (np.array_split)

Every recipe is compared, and chosen, on the same folds: image i is tested exactly once, by a
model that never saw it. Splitting images (not pairs) keeps an image from sitting on both
sides. The folds are recorded by file name relative to the data's image folder
(`Folds.to_json`), so a checkpoint or a report says exactly which images each fold held.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.data import DataError, ScoredImage


@dataclass(frozen=True)
class Folds:
    """Fold number of every image, aligned with `images` (in the order they were given)."""

    images: tuple[ScoredImage, ...]
    fold_of: NDArray[np.int64]  # (N,) in [0, k)
    k: int
    seed: int

    def test(self, i: int) -> NDArray[np.int64]:
        """Indices (into `images`) of fold i's held-out images, ascending."""
        return np.flatnonzero(self.fold_of == i).astype(np.int64)

    def train(self, i: int) -> NDArray[np.int64]:
        """Indices of every image outside fold i, ascending."""
        return np.flatnonzero(self.fold_of != i).astype(np.int64)

    def to_json(self, root: Path) -> dict[str, Any]:
        """{"k", "seed", "folds": [[name, ...] per fold]} with names relative to `root` (which
        may be relative, as a --data flag is: the readers resolve the images' paths)."""
        names = [image.path.relative_to(Path(root).resolve()).as_posix() for image in self.images]
        return {
            "k": self.k,
            "seed": self.seed,
            "folds": [[names[j] for j in self.test(i)] for i in range(self.k)],
        }


def assign_folds(n: int, k: int, seed: int) -> NDArray[np.int64]:
    """Fold of each of n items: k blocks of a PCG64(seed) permutation, sizes within one."""
    if k < 2:
        raise ValueError(f"k-fold cross-validation needs k >= 2, got {k}")
    if n < k:
        raise DataError(f"{k} folds need at least {k} images, got {n}")
    permutation = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    fold_of = np.empty(n, dtype=np.int64)
    for i, block in enumerate(np.array_split(permutation, k)):
        fold_of[block] = i
    return fold_of


def make_folds(images: Sequence[ScoredImage], k: int = 5, seed: int = 0) -> Folds:
    """Split `images` into k folds by image. The folds are drawn on the images sorted by path,
    so they depend only on the set of paths and the seed, not on the order given."""
    if len({image.path for image in images}) != len(images):
        raise DataError("an image is listed more than once; folds by image would leak it")
    by_path = sorted(range(len(images)), key=lambda j: str(images[j].path))
    fold_of = np.empty(len(images), dtype=np.int64)
    fold_of[by_path] = assign_folds(len(images), k, seed)
    return Folds(tuple(images), fold_of, k, seed)


def folds_from_json(record: Mapping[str, Any], images: Sequence[ScoredImage], root: Path) -> Folds:
    """Rebuild recorded folds from freshly read images; every image must be in one fold."""
    by_name = {image.path.relative_to(root).as_posix(): image for image in images}
    names = [str(name) for fold in record["folds"] for name in fold]
    if len(names) != len(set(names)):
        raise DataError("recorded folds are not disjoint")
    if set(names) != set(by_name):
        missing, extra = set(by_name) - set(names), set(names) - set(by_name)
        raise DataError(
            f"recorded folds do not cover the images: {len(missing)} image(s) in no fold, "
            f"{len(extra)} recorded name(s) not found"
        )
    fold_by_name = {str(n): i for i, fold in enumerate(record["folds"]) for n in fold}
    fold_of = np.array(
        [fold_by_name[im.path.relative_to(root).as_posix()] for im in images], dtype=np.int64
    )
    return Folds(tuple(images), fold_of, int(record["k"]), int(record["seed"]))


def mean_and_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean over folds, its standard deviation, and the half-width of a 95% t interval.

    half = t_{0.975, k-1} * sd / sqrt(k); the folds' test sets are disjoint, but their
    training sets overlap, so this interval is somewhat too narrow (Bengio & Grandvalet 2004).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0, math.nan
    sd = float(x.std(ddof=1))
    return float(x.mean()), sd, _T975.get(x.size - 1, 1.96) * sd / math.sqrt(x.size)


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
