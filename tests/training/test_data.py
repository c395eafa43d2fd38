"""Tests for training.data: CSV readers and the split by image."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import (
    DataError,
    LabelledPair,
    ScoredImage,
    read_dankmemes,
    read_data,
    read_pairs_csv,
    read_reddit,
    read_scores_csv,
    split_by_image,
    split_from_json,
)
from training.views import load_rgb

DANKMEMES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dankmemes2020-task1"


def _image(path: Path) -> Path:
    """Write a real 8x8 image; the format follows the suffix (PNG or JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
    return path


def _csv(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _fake_images(n: int, root: Path = Path("/data")) -> list[ScoredImage]:
    return [ScoredImage(root / f"img{i:03d}.png", float(i)) for i in range(n)]


# --------------------------------------------------------------------------------------------
# read_scores_csv / read_pairs_csv: happy paths
# --------------------------------------------------------------------------------------------


def test_read_scores_csv_resolves_paths_and_keeps_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = _image(tmp_path / "imgs" / "a.png")
    b = _image(tmp_path / "imgs" / "b.jpg")
    rows = [["path", "score"], ["imgs/b.jpg", "12.5"], ["imgs/a.png", "0"]]
    csv_path = _csv(tmp_path / "scores.csv", rows)
    with caplog.at_level(logging.INFO, logger="training.data"):
        images = read_scores_csv(csv_path)
    assert images == [ScoredImage(b.resolve(), 12.5), ScoredImage(a.resolve(), 0.0)]
    assert all(image.path.is_absolute() for image in images)
    assert any("read 2 row(s): used 2, skipped 0" in r.getMessage() for r in caplog.records)


def test_read_scores_csv_custom_columns_extra_columns_and_bom(tmp_path: Path) -> None:
    _image(tmp_path / "x.png")
    csv_path = tmp_path / "s.csv"
    csv_path.write_text('\ufeffname,likes,note\nx.png,-3,"multi\nline"\n', encoding="utf-8")
    images = read_scores_csv(csv_path, path_column="name", score_column="likes")
    assert images == [ScoredImage((tmp_path / "x.png").resolve(), -3.0)]


def test_read_pairs_csv(tmp_path: Path) -> None:
    a, b, c = (_image(tmp_path / name) for name in ("a.png", "b.jpg", "c.png"))
    rows = [["path_a", "path_b", "label"], ["a.png", "b.jpg", "1"], ["c.png", "a.png", "0.0"]]
    pairs = read_pairs_csv(_csv(tmp_path / "pairs.csv", rows))
    assert pairs == [
        LabelledPair(a.resolve(), b.resolve(), 1),
        LabelledPair(c.resolve(), a.resolve(), 0),
    ]


# --------------------------------------------------------------------------------------------
# Errors name the file and the row (header is row 1)
# --------------------------------------------------------------------------------------------


def test_missing_column_names_found_and_expected(tmp_path: Path) -> None:
    csv_path = _csv(tmp_path / "s.csv", [["path", "likes"], ["a.png", "1"]])
    with pytest.raises(DataError) as info:
        read_scores_csv(csv_path)
    message = str(info.value)
    assert str(csv_path) in message
    assert "'score'" in message
    assert "['path', 'likes']" in message


def test_missing_pair_column(tmp_path: Path) -> None:
    csv_path = _csv(tmp_path / "p.csv", [["path_a", "path_b"], ["a.png", "b.png"]])
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]"):
        read_pairs_csv(csv_path)


@pytest.mark.parametrize(
    ("score", "what"), [("many", "not a number"), ("nan", "not finite"), ("inf", "not finite")]
)
def test_bad_score_names_row(tmp_path: Path, score: str, what: str) -> None:
    _image(tmp_path / "a.png")
    rows = [["path", "score"], ["a.png", "1"], ["a2.png", score]]
    csv_path = _csv(tmp_path / "s.csv", rows)
    with pytest.raises(DataError) as info:
        read_scores_csv(csv_path)
    assert f"{csv_path}, row 3" in str(info.value)
    assert what in str(info.value)


def test_empty_path_names_row(tmp_path: Path) -> None:
    csv_path = _csv(tmp_path / "s.csv", [["path", "score"], ["  ", "1"]])
    with pytest.raises(DataError, match=r"s\.csv, row 2: empty path"):
        read_scores_csv(csv_path)


@pytest.mark.parametrize("label", ["2", "yes", "", "-1"])
def test_bad_label_names_row(tmp_path: Path, label: str) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    rows = [["path_a", "path_b", "label"], ["a.png", "b.png", "1"], ["a.png", "b.png", label]]
    csv_path = _csv(tmp_path / "p.csv", rows)
    with pytest.raises(DataError) as info:
        read_pairs_csv(csv_path)
    assert f"{csv_path}, row 3: label" in str(info.value)


def test_duplicate_image_names_both_rows(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    csv_path = _csv(tmp_path / "s.csv", [["path", "score"], ["a.png", 1], ["./a.png", 2]])
    with pytest.raises(DataError, match=r"row 3: image .*a\.png already listed at row 2"):
        read_scores_csv(csv_path)


def test_missing_and_unreadable_images_raise_with_rows(tmp_path: Path) -> None:
    _image(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    rows = [["path", "score"], ["ok.png", "1"], ["gone.png", "2"], ["broken.png", "3"]]
    csv_path = _csv(tmp_path / "s.csv", rows)
    with pytest.raises(DataError) as info:
        read_scores_csv(csv_path)
    message = str(info.value)
    assert str(csv_path) in message
    assert "2 image reference(s)" in message
    assert f"row 3: {(tmp_path / 'gone.png').resolve()} (missing)" in message
    assert f"row 4: {(tmp_path / 'broken.png').resolve()} (unreadable" in message


def test_check_images_false_skips_decoding_but_not_existence(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"junk")
    csv_path = _csv(tmp_path / "s.csv", [["path", "score"], ["broken.png", 1]])
    assert len(read_scores_csv(csv_path, check_images=False)) == 1
    with pytest.raises(DataError, match="unreadable"):
        read_scores_csv(csv_path)
    _csv(csv_path, [["path", "score"], ["broken.png", 1], ["gone.png", 1]])
    with pytest.raises(DataError, match=r"row 3: .*gone\.png \(missing\)"):
        read_scores_csv(csv_path, check_images=False)


def test_skip_mode_drops_and_logs_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keep = _image(tmp_path / "keep.jpg")
    (tmp_path / "broken.png").write_bytes(b"junk")
    rows = [["path", "score"], ["gone.png", "1"], ["keep.jpg", "2"], ["broken.png", "3"]]
    csv_path = _csv(tmp_path / "s.csv", rows)
    with caplog.at_level(logging.INFO, logger="training.data"):
        images = read_scores_csv(csv_path, on_bad_image="skip")
    assert images == [ScoredImage(keep.resolve(), 2.0)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2 of 3 row(s)" in warnings[0]
    assert "row 2:" in warnings[0]
    assert any("read 3 row(s): used 1, skipped 2" in r.getMessage() for r in caplog.records)


def test_skip_mode_for_pairs_drops_pairs_touching_bad_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png")
    rows = [["path_a", "path_b", "label"], ["a.png", "b.png", "1"], ["b.png", "gone.png", "0"]]
    csv_path = _csv(tmp_path / "p.csv", rows)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        pairs = read_pairs_csv(csv_path, on_bad_image="skip")
    assert pairs == [LabelledPair(a.resolve(), b.resolve(), 1)]
    assert "skipped 1 of 2 row(s)" in caplog.text
    with pytest.raises(DataError, match=r"row 3: .*gone\.png"):
        read_pairs_csv(csv_path)


def test_skip_mode_with_nothing_left_raises(tmp_path: Path) -> None:
    csv_path = _csv(tmp_path / "s.csv", [["path", "score"], ["gone.png", 1]])
    with pytest.raises(DataError, match="no usable rows"):
        read_scores_csv(csv_path, on_bad_image="skip")


def test_missing_or_empty_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_scores_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_scores_csv(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="no data rows"):
        read_scores_csv(_csv(tmp_path / "header.csv", [["path", "score"]]))


# --------------------------------------------------------------------------------------------
# DANKMEMES layout
# --------------------------------------------------------------------------------------------


def test_read_dankmemes_layout(tmp_path: Path) -> None:
    one = _image(tmp_path / "images" / "1.jpg")
    rows = [["File", "Engagement", "Text"], ["1.jpg", "3141", "a,b"], ["2.jpg", "7", ""]]
    _csv(tmp_path / "labels.csv", rows)
    with pytest.raises(DataError, match=r"labels\.csv: 1 image .*row 3: .*images/2\.jpg"):
        read_dankmemes(tmp_path)
    assert read_dankmemes(tmp_path, on_bad_image="skip") == [ScoredImage(one.resolve(), 3141.0)]


def test_read_reddit_layout_counts_used_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A small Reddit-like folder: labels.csv (File, Upvotes, Created, Title) + images/."""
    a = _image(tmp_path / "images" / "aaa111.jpg")
    b = _image(tmp_path / "images" / "bbb222.jpg")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    rows = [
        ["File", "Upvotes", "Created", "Title"],
        ["aaa111.jpg", "51234", "2016-08-01T00:00:00Z", 'A title, with "quotes"'],
        ["gone.jpg", "494", "2017-01-01T00:00:00Z", "missing image"],
        ["bbb222.jpg", "40321", "2016-09-01T12:00:00Z", ""],
        ["broken.jpg", "1200", "2018-04-01T00:00:00Z", "undecodable"],
    ]
    _csv(tmp_path / "labels.csv", rows)
    with pytest.raises(DataError, match=r"2 image reference\(s\) in 2 row\(s\)"):
        read_reddit(tmp_path)
    with caplog.at_level(logging.INFO, logger="training.data"):
        images, pairs = read_data(tmp_path, "reddit", on_bad_image="skip")
    assert pairs is None
    assert images == [ScoredImage(a.resolve(), 51234.0), ScoredImage(b.resolve(), 40321.0)]
    assert any("read 4 row(s): used 2, skipped 2" in r.getMessage() for r in caplog.records)


def test_reddit_layout_needs_the_upvotes_column(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "x.jpg")
    _csv(tmp_path / "labels.csv", [["File", "Engagement"], ["x.jpg", "3"]])
    with pytest.raises(DataError, match=r"missing column\(s\) \['Upvotes'\]"):
        read_reddit(tmp_path)


@pytest.mark.skipif(
    not (DANKMEMES / "labels.csv").is_file(),
    reason=f"real DANKMEMES data not found at {DANKMEMES} (kept outside the repo, never copied)",
)
def test_real_dankmemes_scores_are_engagement() -> None:
    start = time.perf_counter()
    images = read_dankmemes(DANKMEMES, check_images=False)
    assert time.perf_counter() - start < 5.0
    assert len(images) == 1280
    with (DANKMEMES / "labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for i in (0, 1, 637, 1279):
        assert images[i].path == (DANKMEMES / "images" / rows[i]["File"]).resolve()
        assert images[i].score == float(rows[i]["Engagement"])


# --------------------------------------------------------------------------------------------
# split_by_image
# --------------------------------------------------------------------------------------------


def test_split_is_disjoint_covering_and_sized() -> None:
    images = _fake_images(40)
    split = split_by_image(images, val_fraction=0.15, seed=3)
    train_paths = {im.path for im in split.train}
    val_paths = {im.path for im in split.val}
    assert not train_paths & val_paths
    assert len(split.train) + len(split.val) == len(images)
    assert train_paths | val_paths == {im.path for im in images}
    assert len(split.val) == 6  # 0.15 * 40
    assert len(split_by_image(_fake_images(33), 0.2).val) == 7  # 6.6 rounds to 7
    assert (split.seed, split.val_fraction) == (3, 0.15)


def test_split_is_deterministic_and_order_independent() -> None:
    images = _fake_images(50)
    first = split_by_image(images, seed=7)
    assert split_by_image(images, seed=7) == first
    shuffled = [images[i] for i in np.random.default_rng(1).permutation(len(images))]
    assert split_by_image(shuffled, seed=7) == first
    assert split_by_image(images, seed=8).val != first.val


def test_split_never_leaves_a_side_empty_and_rejects_duplicates() -> None:
    tiny = split_by_image(_fake_images(3), val_fraction=0.01)
    assert (len(tiny.train), len(tiny.val)) == (2, 1)
    with pytest.raises(DataError, match="at least 2"):
        split_by_image(_fake_images(1))
    with pytest.raises(DataError, match="more than once"):
        split_by_image([*_fake_images(4), _fake_images(1)[0]])


def test_split_json_round_trip() -> None:
    root = Path("/data")
    images = _fake_images(20, root)
    split = split_by_image(images, val_fraction=0.25, seed=5)
    record = split.to_json(root)
    assert record["val"] == [im.path.name for im in split.val]
    assert split_from_json(record, list(reversed(images)), root) == split


def test_split_from_json_reports_unknown_names_and_extra_images(
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = Path("/data")
    split = split_by_image(_fake_images(10, root), seed=0)
    record = split.to_json(root)
    with pytest.raises(DataError, match="not among the given images"):
        split_from_json(record, _fake_images(5, root), root)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        rebuilt = split_from_json(record, _fake_images(12, root), root)
    assert rebuilt == split
    assert "2 image(s) are in neither side" in caplog.text
    with pytest.raises(DataError, match="not inside the split root"):
        split.to_json(Path("/elsewhere"))


# --------------------------------------------------------------------------------------------
# Truncated images, paths outside the root, degenerate pairs
# --------------------------------------------------------------------------------------------


def _truncated_jpeg(path: Path) -> Path:
    """A real JPEG cut short: its header and structure are intact, its pixels are not."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as image:
        image.verify()  # the premise: a structural check alone lets this file through
    return path


def test_truncated_jpeg_is_unreadable_at_read_time(tmp_path: Path) -> None:
    _image(tmp_path / "ok.png")
    _truncated_jpeg(tmp_path / "cut.jpg")
    csv_path = _csv(tmp_path / "s.csv", [["path", "score"], ["ok.png", 1], ["cut.jpg", 2]])
    with pytest.raises(DataError, match=r"row 3: .*cut\.jpg \(unreadable: OSError"):
        read_scores_csv(csv_path)
    assert [im.path.name for im in read_scores_csv(csv_path, on_bad_image="skip")] == ["ok.png"]


def test_decoding_a_truncated_jpeg_names_the_file(tmp_path: Path) -> None:
    cut = _truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match=r"cut\.jpg: cannot decode the image \(OSError"):
        load_rgb(cut, 64)


@pytest.mark.parametrize("outside", ["../elsewhere.png", "sub/../../elsewhere.png"])
def test_path_outside_the_csv_folder_names_the_row(tmp_path: Path, outside: str) -> None:
    _image(tmp_path / "elsewhere.png")
    _image(tmp_path / "data" / "ok.png")
    rows = [["path", "score"], ["ok.png", 1], [outside, 2]]
    csv_path = _csv(tmp_path / "data" / "s.csv", rows)
    with pytest.raises(DataError, match=r"row 3: path .* points outside .*data"):
        read_scores_csv(csv_path)
    pair_rows = [["path_a", "path_b", "label"], ["ok.png", outside, 1]]
    pairs = _csv(tmp_path / "data" / "p.csv", pair_rows)
    with pytest.raises(DataError, match=r"row 2: path .* in column 'path_b' points outside"):
        read_pairs_csv(pairs)


def test_absolute_path_inside_the_folder_is_accepted(tmp_path: Path) -> None:
    image = _image(tmp_path / "sub" / "a.png")
    csv_path = _csv(tmp_path / "s.csv", [["path", "score"], [str(image), 1]])
    assert read_scores_csv(csv_path) == [ScoredImage(image.resolve(), 1.0)]


def test_pair_of_an_image_with_itself_names_the_row(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    rows = [["path_a", "path_b", "label"], ["a.png", "b.png", 1], ["a.png", "./a.png", 0]]
    with pytest.raises(DataError, match=r"row 3: path_a and path_b are the same image"):
        read_pairs_csv(_csv(tmp_path / "p.csv", rows))
