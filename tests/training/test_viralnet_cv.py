"""`python -m training.viralnet_cv` end to end on a tiny DANKMEMES-layout set (tiny trunk): it
runs, scores every image exactly once out of fold, on the folds LENA's cross-validation
(`training.crossval.load_dataset`) draws for the same data, k and seed, and reports crossval's
metrics of those scores."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from training.crossval import fold_metrics, load_dataset, summarise
from training.viralnet_cv import main, recipe_name
from training.viralnet_fit import FitConfig

from .tiny_runs import write_dankmemes

N, K, SEED = 18, 3, 2
TINY = [
    "--backbone", "tiny", "--input-size", "64", "--crop-size", "32", "--epochs", "1",
    "--pairs-per-epoch", "16", "--batch-pairs", "8", "--device", "cpu",
]  # fmt: skip


def test_every_image_is_scored_once_out_of_fold_on_crossvals_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_dankmemes(tmp_path / "dank", n=N)
    out = tmp_path / "cv" / "report.json"
    monkeypatch.chdir(tmp_path)  # a relative --data: the report still names images by file
    main(
        ["--data", "dank", "--data-format", "dankmemes", "--k", str(K), "--seed", str(SEED),
         "--out", str(out), *TINY]
    )  # fmt: skip
    report = json.loads(out.read_text())
    lena = load_dataset(f"dankmemes={data}", K, SEED, tmp_path / "cache")
    assert report["folds"] == {"dankmemes": lena.folds.to_json(lena.root)}
    assert report["seed"] == SEED
    folds = report["folds"]["dankmemes"]["folds"]
    names = sorted(path.name for path in (data / "images").iterdir())
    assert sorted(name for fold in folds for name in fold) == names  # each held out once
    [(recipe, result)] = report["results"].items()
    assert recipe == "ViralNet-M, initial crops, Adam ranker (1 epochs, 64/32 px)"  # 2 steps
    scores = result["out_of_fold"]["dankmemes"]
    assert sorted(scores) == names
    assert all(math.isfinite(s) for s in scores.values())
    # Fold i's model trained on the other folds' images only, and the reported accuracies are
    # crossval's metrics of the held-out scores, fold by fold.
    assert [run["train_images"] for run in result["fold_runs"]] == [N - len(f) for f in folds]
    truth = {path.name: score for path, score in zip(lena.paths, lena.scores, strict=True)}
    per_fold = [
        fold_metrics(np.array([scores[n] for n in fold]), np.array([truth[n] for n in fold]))
        for fold in folds
    ]
    assert result["within"]["dankmemes"] == summarise(per_fold)
    header = report["table"].splitlines()[0]
    assert header == "| recipe | dankmemes >= 2x | dankmemes top/bottom |"


def test_a_run_whose_localisers_never_move_is_named_for_its_initial_crops() -> None:
    cfg = FitConfig(epochs=3, pairs_per_epoch=1024, batch_pairs=32)  # 96 steps
    assert "initial crops" in recipe_name(replace(cfg, warmup_steps=100))
    assert "initial crops" in recipe_name(replace(cfg, warmup_steps=0, loc_lr=0.0))
    learned = recipe_name(replace(cfg, warmup_steps=32, loc_lr=1e-3))
    assert learned == (
        "ViralNet-M, learned crops (3 epochs, 160/112 px, localisers at lr 0.001 after 32 steps)"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arch", "lena"], "choose --arch viralnet"),
        (["--k", "1"], "k >= 2"),
        (["--pooling", "gap"], "--pooling applies only to --arch lena"),
        (["--device", "gpu"], "--device: String should match"),
    ],
)
def test_bad_flags_are_refused_before_any_data_is_read(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = ["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit) as refused:
        main([*missing, *argv])
    assert refused.value.code != 0
    assert message in f"{refused.value} {capsys.readouterr().err}"
    assert not (tmp_path / "r.json").exists()
