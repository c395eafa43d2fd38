"""k-fold split by image: disjoint, covering, balanced, recorded and order-independent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, ScoredImage
from training.folds import folds_from_json, make_folds, mean_and_interval


def images(n: int, root: Path = Path("/data")) -> list[ScoredImage]:
    return [ScoredImage(root / f"img{i:03d}.jpg", float(i)) for i in range(n)]


@pytest.mark.parametrize(("n", "k"), [(10, 5), (23, 5), (7, 3), (5, 5)])
def test_folds_are_disjoint_and_cover_every_image(n: int, k: int) -> None:
    folds = make_folds(images(n), k, seed=3)
    tests = [set(folds.test(i).tolist()) for i in range(k)]
    assert set().union(*tests) == set(range(n))  # covering
    assert sum(len(t) for t in tests) == n  # disjoint
    assert max(map(len, tests)) - min(map(len, tests)) <= 1  # balanced
    for i in range(k):  # train is exactly the complement of test
        assert set(folds.train(i).tolist()) == set(range(n)) - tests[i]


def test_folds_depend_on_the_seed_not_on_the_order_given() -> None:
    given = images(40)
    folds = make_folds(given, 5, seed=0)
    shuffled = [given[j] for j in np.random.default_rng(1).permutation(40)]
    again = make_folds(shuffled, 5, seed=0)
    fold_of = {im.path: int(f) for im, f in zip(folds.images, folds.fold_of, strict=True)}
    assert all(fold_of[im.path] == f for im, f in zip(again.images, again.fold_of, strict=True))
    other = make_folds(given, 5, seed=1)
    assert not np.array_equal(other.fold_of, folds.fold_of)


def test_folds_are_recorded_by_name_and_rebuilt(tmp_path: Path) -> None:
    given = images(17, tmp_path)
    folds = make_folds(given, 4, seed=2)
    record = folds.to_json(tmp_path)
    assert record["k"] == 4
    assert record["seed"] == 2
    assert sorted(n for fold in record["folds"] for n in fold) == [
        f"img{i:03d}.jpg" for i in range(17)
    ]
    rebuilt = folds_from_json(record, list(reversed(given)), tmp_path)
    fold_of = {im.path: int(f) for im, f in zip(folds.images, folds.fold_of, strict=True)}
    assert all(fold_of[im.path] == f for im, f in zip(rebuilt.images, rebuilt.fold_of, strict=True))


def test_folds_are_recorded_against_a_relative_root_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """crossval's --data is often relative; the readers resolve the images' paths."""
    given = [ScoredImage(image.path.resolve(), image.score) for image in images(6, tmp_path)]
    monkeypatch.chdir(tmp_path.parent)
    record = make_folds(given, 3).to_json(Path(tmp_path.name))
    assert sorted(n for fold in record["folds"] for n in fold) == [
        f"img{i:03d}.jpg" for i in range(6)
    ]


def test_recorded_folds_must_cover_the_images(tmp_path: Path) -> None:
    given = images(10, tmp_path)
    record = make_folds(given, 5).to_json(tmp_path)
    with pytest.raises(DataError, match="do not cover"):
        folds_from_json(record, [*given, ScoredImage(tmp_path / "new.jpg", 1.0)], tmp_path)
    record["folds"][1].append(record["folds"][0][0])
    with pytest.raises(DataError, match="not disjoint"):
        folds_from_json(record, given, tmp_path)


def test_refuses_repeated_images_and_too_few() -> None:
    with pytest.raises(DataError, match="more than once"):
        make_folds([*images(6), images(1)[0]], 3)
    with pytest.raises(DataError, match="at least 5"):
        make_folds(images(4), 5)
    with pytest.raises(ValueError, match="k >= 2"):
        make_folds(images(4), 1)


def test_mean_and_interval() -> None:
    mean, sd, half = mean_and_interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert sd == pytest.approx(0.1)
    assert half == pytest.approx(4.303 * 0.1 / np.sqrt(3))
