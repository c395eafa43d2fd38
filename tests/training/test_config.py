"""The training config is the CLI: every field a flag with help, bad values refused at parse."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import torch

from model.backbones import BACKBONES
from model.checkpoint import CheckpointInfo, save_checkpoint
from model.network import NetworkConfig, ViralityNet
from training.cache import FromBlock
from training.config import ConfigError, TrainConfig
from training.train import main, parse_args
from training.viralnet_fit import fit_config


def test_help_shows_every_flag_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    described = TrainConfig.__pydantic_fields__  # type: ignore[attr-defined]
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text
        description = described[f.name].description
        assert description, f"{flag} has no help line"
        assert " ".join(description.split()) in text
    assert "--no-amp" in text
    assert "{gap,gmp,gnap,lena}" in text


@pytest.mark.parametrize(
    ("flag", "value", "allowed"),
    [
        ("--pooling", "max", "'gap', 'gmp', 'gnap' or 'lena'"),
        ("--protocol", "random", "'median' or 'ratio'"),
        ("--backbone", "resnet9", "'mobilenet_v2', 'alex5', 'alex7', 'vgg13' or 'tiny'"),
        ("--data-format", "json", "'dankmemes', 'reddit', 'scores' or 'pairs'"),
        ("--arch", "viralnet-x", "'lena', 'viralnet', 'viralnet-m', 'viralnet-c' or 'viralnet-mc'"),
    ],
)
def test_a_bad_choice_fails_at_parse_time_naming_the_allowed_values(
    flag: str, value: str, allowed: str, tmp_path: Path
) -> None:
    # The data does not exist: the error must come from the flags, before anything is read.
    argv = ["--data", str(tmp_path / "missing"), flag, value, "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match=f"{flag}: Input should be {allowed}"):
        main(argv)
    assert not (tmp_path / "run").exists()


def test_unknown_flags_and_bad_numbers_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--freeze_blocks", "3"])  # flags are kebab-case, as before
    with pytest.raises(ConfigError, match="--views: Input should be greater than 0"):
        parse_args(["--views", "0"])
    with pytest.raises(ConfigError, match="--device: String should match"):
        parse_args(["--device", "gpu"])
    assert parse_args(["--no-amp", "--device", "cuda:1"]).amp is False


def test_each_backbone_freezes_its_own_blocks_by_default() -> None:
    assert parse_args([]).frozen_blocks == 18  # MobileNetV2: blocks 0-17, as before
    for name, spec in BACKBONES.items():
        cfg = parse_args(["--backbone", name])
        assert cfg.freeze_blocks is None
        assert cfg.frozen_blocks == spec.frozen_by_default < spec.blocks  # something trains
    assert parse_args(["--backbone", "alex7", "--freeze-blocks", "0"]).frozen_blocks == 0


def test_alex7_keeps_its_random_layers_trainable_by_default() -> None:
    """The old default (18, MobileNetV2's count) froze all of alex7, new random layers too."""
    net = ViralityNet(NetworkConfig(backbone="alex7"), pretrained=False)
    model = FromBlock(net, parse_args(["--backbone", "alex7"]).frozen_blocks)
    extra = net.trunk[1]  # type: ignore[index]
    assert all(p.requires_grad for p in extra.parameters())
    assert not any(p.requires_grad for p in model.prefix.parameters())


@pytest.mark.parametrize(("backbone", "blocks"), [("alex7", 2), ("mobilenet_v2", 19)])
def test_an_out_of_range_freeze_names_the_backbones_block_count(backbone: str, blocks: int) -> None:
    too_many = str(blocks + 1)
    with pytest.raises(ConfigError, match=f"{backbone}, which has {blocks} trunk blocks"):
        parse_args(["--backbone", backbone, "--freeze-blocks", too_many])
    assert parse_args(["--backbone", backbone, "--freeze-blocks", str(blocks)]).frozen_blocks


def test_a_resumed_run_checks_freezing_against_the_checkpoints_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling="gap"), pretrained=False)
    save_checkpoint(net, CheckpointInfo(net.config, net.preprocessing), tmp_path / "tiny")
    with pytest.raises(ConfigError, match="tiny, which has 6 trunk blocks"):
        parse_args(["--resume", str(tmp_path / "tiny"), "--freeze-blocks", "7"])
    assert parse_args(["--resume", str(tmp_path / "tiny")]).frozen_blocks == 0


# --- one CLI for both architectures -----------------------------------------------------------


def test_arch_defaults_to_lena_and_each_arch_gets_its_own_weight_decay() -> None:
    lena = parse_args([])
    assert (lena.arch, lena.weight_decay) == ("lena", 1e-2)
    viralnet = parse_args(["--arch", "viralnet-m"])
    assert (viralnet.arch, viralnet.weight_decay) == ("viralnet-m", 1e-4)
    assert parse_args(["--arch", "viralnet", "--weight-decay", "0"]).weight_decay == 0.0


def test_viralnet_fit_receives_the_shared_flags_and_its_own() -> None:
    cfg = parse_args(
        [
            "--arch", "viralnet-mc", "--backbone", "tiny", "--data", "d.csv",
            "--data-format", "scores", "--on-bad-image", "skip", "--val-fraction", "0.3",
            "--epochs", "3", "--batch-pairs", "5", "--pairs-per-epoch", "7",
            "--protocol", "median", "--ratio", "3", "--train-ratio", "4", "--head-lr", "0.5",
            "--seed", "9", "--out", "o", "--input-size", "48", "--crop-size", "24",
            "--loc-lr", "0.25", "--penalty", "2", "--jitter-area", "0.8", "--weight-decay", "0.1",
        ]
    )  # fmt: skip
    fit = fit_config(cfg)
    assert (fit.arch, fit.backbone) == ("viralnet-mc", "tiny")
    assert (fit.data, fit.data_format) == ("d.csv", "scores")
    assert (fit.on_bad_image, fit.val_fraction, fit.seed, fit.out) == ("skip", 0.3, 9, "o")
    assert (fit.epochs, fit.batch_pairs, fit.pairs_per_epoch) == (3, 5, 7)
    assert (fit.protocol, fit.ratio, fit.train_ratio) == ("median", 3.0, 4.0)
    assert (fit.lr, fit.loc_lr, fit.weight_decay) == (0.5, 0.25, 0.1)
    assert (fit.input_size, fit.crop_size, fit.penalty, fit.jitter_area) == (48, 24, 2.0, 0.8)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arch", "viralnet", "--pooling", "gap"], "--pooling applies only to --arch lena"),
        (
            ["--arch", "viralnet-m", "--lr", "1e-3", "--views", "2"],
            "--views, --lr apply only to --arch lena, not to viralnet-m",
        ),
        (["--crop-size", "64"], "--crop-size applies only to --arch viralnet\\*, not to lena"),
        (["--arch", "viralnet", "--data-format", "pairs"], "per-image scores, not on pairs"),
    ],
)
def test_a_flag_of_the_other_architecture_is_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_args(argv)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "cpu", "auto"])
def test_viralnet_trains_on_any_device_and_its_fit_gets_it(device: str) -> None:
    """Parsing never looks for the GPU (the fit resolves the device): these parse anywhere."""
    cfg = parse_args(["--arch", "viralnet-m", "--device", device])
    assert fit_config(cfg).device == device


def test_viralnet_still_refuses_a_malformed_device() -> None:
    with pytest.raises(ConfigError, match="--device: String should match"):
        parse_args(["--arch", "viralnet-m", "--device", "gpu:0"])


def test_the_record_leaves_out_the_other_architectures_settings() -> None:
    lena = parse_args([]).record()
    assert lena["pooling"] == "lena"
    assert "crop_size" not in lena
    viralnet = parse_args(["--arch", "viralnet"]).record()
    assert viralnet["crop_size"] == 112
    assert "pooling" not in viralnet
