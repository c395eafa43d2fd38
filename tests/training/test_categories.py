"""ViralNet-C's category probe (training/categories.py): the fit, the cross-fitting, the
DANKMEMES labels it reads, and how cross-validation appends it to the ranker's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.categories import cross_fitted, fit_probe, probe_outputs
from training.crossval import Dataset, attach_category_probe
from training.data import DataError, ScoredImage, read_dankmemes_categories
from training.folds import make_folds


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and three labels, each the sign of its own direction of the features."""
    fixed = np.random.default_rng(99)  # the same rule and feature scales for every call
    scales, directions = fixed.uniform(0.5, 20, size=12), fixed.normal(size=(12, 3))
    raw = np.random.default_rng(seed).normal(size=(n, 12))
    return raw * scales + 5.0, (raw @ directions > 0).astype(float)  # features unstandardised


def folds_of(n: int, k: int = 5) -> object:
    return make_folds([ScoredImage(Path(f"/img/{j:03d}.jpg"), 1.0) for j in range(n)], k, 0)


def test_the_probe_learns_planted_categories_and_predicts_new_images() -> None:
    features, labels = planted(600, 0)
    probe = fit_probe(features, labels)
    new_features, new_labels = planted(400, 1)
    g = probe_outputs(probe, new_features)
    assert g.shape == (400, 3)
    assert ((g > 0.5) == (new_labels > 0.5)).mean(axis=0).min() > 0.9


def test_cross_fitting_never_scores_an_image_with_a_probe_that_saw_its_labels() -> None:
    """Random labels on many features: a probe fitted on all images memorises them; the
    cross-fitted outputs, from probes that never saw each image, are at chance."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(100, 300))
    labels = (rng.random(size=(100, 3)) > 0.5).astype(float)
    in_sample = probe_outputs(fit_probe(features, labels, l2=1e-4), features)
    assert ((in_sample > 0.5) == (labels > 0.5)).mean() > 0.95
    held_out = cross_fitted(features, labels, folds_of(100), l2=1e-4)
    assert ((held_out > 0.5) == (labels > 0.5)).mean() < 0.7


def test_dankmemes_categories_are_read_in_the_order_of_the_paths(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels.csv").write_text(
        "File,Engagement,Date,Manipulation,Visual,Text,Meme\n"
        'a.jpg,10,2020-01-01,1,"Rossi, Bianchi",ciao,0\n'
        "b.jpg,20,2020-01-02,0,0,,1\n"
    )
    paths = [tmp_path / "images" / "b.jpg", tmp_path / "images" / "a.jpg"]
    labels = read_dankmemes_categories(tmp_path, paths)
    np.testing.assert_array_equal(labels, [[1, 0, 0], [0, 1, 1]])  # meme, manipulation, people
    with pytest.raises(DataError, match="no category labels"):
        read_dankmemes_categories(tmp_path, [tmp_path / "images" / "c.jpg"])


def dataset(name: str, features: np.ndarray, labels: np.ndarray | None) -> Dataset:
    n = len(features)
    inputs = torch.from_numpy(np.concatenate([features] * 4, axis=1)).half()[None, :, :, None]
    return Dataset(
        name=name,
        root=Path("/img"),
        paths=[Path(f"/img/{j}.jpg") for j in range(n)],
        scores=np.ones(n),
        views=torch.zeros(2, n, 1, 1),
        folds=folds_of(n),  # type: ignore[arg-type]
        viralnet={"viralnet-m": inputs},
        categories=labels,
    )


def test_cross_validation_appends_cross_fitted_and_transferred_probe_outputs() -> None:
    features, labels = planted(300, 2)
    other, _ = planted(50, 3)
    labelled, unlabelled = dataset("dankmemes", features, labels), dataset("reddit", other, None)
    attach_category_probe([unlabelled, labelled], "viralnet-m")
    for d in (labelled, unlabelled):
        base, probed = d.viralnet["viralnet-m"], d.viralnet["viralnet-m+probe"]
        assert probed.shape == (1, base.shape[1], base.shape[2] + 3, 1)
        assert torch.equal(probed[..., : base.shape[2], :], base)
    phi = labelled.viralnet["viralnet-m"][0, :, :12, 0].double().numpy()
    expected = cross_fitted(phi, labels, labelled.folds)
    got = labelled.viralnet["viralnet-m+probe"][0, :, -3:, 0].double().numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)  # stored as float16
    transferred = probe_outputs(
        fit_probe(phi, labels), unlabelled.viralnet["viralnet-m"][0, :, :12, 0].double().numpy()
    )
    got = unlabelled.viralnet["viralnet-m+probe"][0, :, -3:, 0].double().numpy()
    np.testing.assert_allclose(got, transferred, atol=2e-3)
    with pytest.raises(ValueError, match="category labels"):
        attach_category_probe([dataset("reddit", other, None)], "viralnet-m")
