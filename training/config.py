"""The training run's settings: one typed dataclass, which is also the `viraliency-train` CLI.

Every field is a flag (`eta_init` -> `--eta-init`, booleans as `--amp/--no-amp`), its docstring
is the flag's `--help` line, and its type is checked when the flags are parsed: an enumeration
is a `Literal` (the registries' names for backbones and poolings), so a bad value fails at once
with the allowed values. Adding a setting is adding a field here.

`--arch` picks the network: `lena` (the default) or one of ViralNet's (model/viralnet.py), which
training/viralnet_fit.py fits. The data, split, pair and run flags mean the same for both; a flag of
one architecture's network or optimiser (LENA_ONLY, VIRALNET_ONLY) set for the other is refused
rather than silently ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, CliSettingsSource, SettingsConfigDict

from model.backbones import BACKBONES, backbone_spec
from model.devices import DEVICE_PATTERN
from model.lena import POOLINGS
from model.viralnet import ARCHS as VIRALNET_ARCHS
from training.data import BadImagePolicy, DataFormat
from training.pairs import PairProtocol

if TYPE_CHECKING:
    BackboneName = str
    PoolingName = str
    ArchName = str
else:  # the registries are the one list of names
    BackboneName = Literal[tuple(BACKBONES)]
    PoolingName = Literal[tuple(POOLINGS)]
    ArchName = Literal[("lena", *VIRALNET_ARCHS)]

# Settings of one architecture's network or optimiser; the other refuses them when changed.
LENA_ONLY = (
    "views", "pooling", "eta_init", "objectness", "freeze_blocks", "head_init", "optimizer",
    "lr", "eta_lr", "resume", "amp",
)  # fmt: skip
VIRALNET_ONLY = (
    "input_size",
    "crop_size",
    "loc_lr",
    "penalty",
    "jitter_area",
    "min_crop",
    "warmup_steps",
    "categories",
    "category_data",
)
# Weight decay means AdamW's decoupled decay for LENA, Adam's L2 term for ViralNet.
DEFAULT_WEIGHT_DECAY = {"lena": 1e-2, "viralnet": 1e-4}


_FREEZE_HELP = "trunk blocks kept frozen and cached; 0 = train end to end; default: " + ", ".join(
    f"{name} {spec.frozen_by_default} of {spec.blocks}" for name, spec in BACKBONES.items()
)


AtLeastOne = Annotated[float, Field(ge=1)]


class ConfigError(ValueError):
    """Training flags that contradict each other or the checkpoint being resumed."""


@dataclass(config=ConfigDict(extra="forbid", use_attribute_docstrings=True))
class TrainConfig:
    """Train the siamese virality network with the pairwise loss of eq. (1)."""

    # -- data ------------------------------------------------------------------------------
    data: str = "../shared/data/dankmemes2020-task1"
    """the DANKMEMES folder, or the CSV of --data-format scores or pairs"""
    data_format: DataFormat = "dankmemes"
    """dankmemes (labels.csv + images/), scores (CSV path,score), pairs (CSV path_a,path_b,label)"""
    on_bad_image: BadImagePolicy = "error"
    """a missing or undecodable image stops the run (error), or its rows are left out (skip)"""
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.15
    """share of the images held out for validation (split by image)"""
    views: PositiveInt = 4
    """augmented views rendered (and cached) per training image"""

    # -- network ---------------------------------------------------------------------------
    arch: ArchName = "lena"
    """lena (siamese CNN + pooling), or ViralNet's spatial transformers: viralnet (one),
    viralnet-m (three, on the image pyramid), -c / -mc (plus ImageNet category features)"""
    backbone: BackboneName = "mobilenet_v2"
    """the trunk (model/backbones.py)"""
    pooling: PoolingName = "lena"
    """the global pooling (model/lena.py): gap, gmp, gnap (fixed eta) or lena (learned eta)"""
    eta_init: Annotated[float, Field(ge=0, le=1)] = 0.5
    """eta of gnap and lena at the start: 0 = max pooling, 1 = average pooling"""
    objectness: NonNegativeInt = 0
    """fuse the CAMs of this many ImageNet classes (section 3.4; the paper: 30); 0 = off"""
    freeze_blocks: Annotated[NonNegativeInt | None, Field(description=_FREEZE_HELP)] = None
    head_init: Literal["random", "ridge"] = "random"
    """ridge: start the head from a ridge fit of log engagement on pooled features"""

    # -- fit -------------------------------------------------------------------------------
    epochs: PositiveInt = 6
    """epochs to train (a resumed run numbers them on from the checkpoint's last)"""
    batch_pairs: PositiveInt = 64
    """pairs per optimiser step"""
    pairs_per_epoch: PositiveInt = 2048
    """pairs drawn afresh each epoch (labelled pairs: all of them)"""
    protocol: PairProtocol = "ratio"
    """training pairs: ratio (scores >= --train-ratio apart) or median (the paper's)"""
    ratio: AtLeastOne = 2.0
    """validation pairs differ by at least this factor"""
    train_ratio: AtLeastOne = 2.0
    """with --protocol ratio, training pairs differ by at least this factor"""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """adamw, or sgd with momentum 0.9"""
    lr: NonNegativeFloat = 3e-5
    """learning rate of the pretrained trunk (one-cycle schedule)"""
    head_lr: NonNegativeFloat = 1e-3
    """learning rate of the new layers (linear head, objectness fusion)"""
    eta_lr: NonNegativeFloat = 1e-2
    """learning rate of eta, which moves in steps of 1/(K-1)"""
    weight_decay: NonNegativeFloat | None = None
    """weight decay; default 1e-2 for lena (AdamW's, never on eta, biases or norms), 1e-4 for
    viralnet (Adam's L2 term on the localisers and the ranker)"""
    seed: int = 0
    """seeds the split, the views, the pairs and the new layers"""

    # -- run -------------------------------------------------------------------------------
    out: str = "runs/default"
    """checkpoint folder, rewritten each time validation improves"""
    resume: str = ""
    """a checkpoint to continue from: its weights, network and split are kept"""
    amp: bool = True
    """bf16 autocast on CUDA GPUs that support it"""
    device: Annotated[str, Field(pattern=DEVICE_PATTERN)] = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N"""

    # -- ViralNet (--arch viralnet*) -------------------------------------------------------
    input_size: PositiveInt = 160
    """ViralNet: the whole image's side in pixels"""
    crop_size: PositiveInt = 112
    """ViralNet: the crops' side in pixels, as fed to the trunk"""
    loc_lr: NonNegativeFloat = 1e-4
    """ViralNet: learning rate of the localisers (--head-lr is the ranker's)"""
    penalty: NonNegativeFloat = 1.0
    """ViralNet: weight of the spatial penalty on crops that leave the image"""
    jitter_area: Annotated[float, Field(gt=0, le=1)] = 0.9
    """ViralNet: each pyramid level is sampled in a random window of this share of its area"""
    min_crop: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """ViralNet: crops smaller than this fraction of their initial side pay a shrink penalty
    (0: off, the paper's loss)"""
    warmup_steps: NonNegativeInt = 100
    """ViralNet: steps the ranker trains alone before the localisers move"""
    categories: Literal["imagenet", "probe"] = "imagenet"
    """ViralNet-C / -MC: the category features, the trunk's ImageNet class scores (imagenet)
    or a logistic probe of DANKMEMES's category labels fitted beforehand (probe)"""
    category_data: str = ""
    """ViralNet --categories probe: the DANKMEMES folder whose labels fit the probe (default:
    --data, when that is DANKMEMES; its training images only)"""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.freeze_blocks is not None:
            backbone_spec(self.backbone).check_frozen(self.backbone, self.freeze_blocks)
        if self.head_init == "ridge" and self.data_format == "pairs":
            raise ValueError("--head-init ridge fits per-image scores, which pairs do not have")
        family = "lena" if self.arch == "lena" else "viralnet"
        others = VIRALNET_ONLY if family == "lena" else LENA_ONLY
        changed = [_flag(name) for name in others if getattr(self, name) != _default(name)]
        if changed:
            other = "viralnet*" if family == "lena" else "lena"
            verb = "applies" if len(changed) == 1 else "apply"
            raise ValueError(
                f"{', '.join(changed)} {verb} only to --arch {other}, not to {self.arch}: "
                f"leave it out, or choose --arch {other}"
            )
        if family == "viralnet":
            if self.categories == "probe" and not self.arch.endswith("c"):
                raise ValueError(f"--categories applies to viralnet-c / -mc, not to {self.arch}")
            if self.category_data and self.categories != "probe":
                raise ValueError("--category-data is the probe's data: give --categories probe")
            if (
                self.categories == "probe"
                and not self.category_data
                and self.data_format != "dankmemes"
            ):
                raise ValueError(
                    "--categories probe fits on DANKMEMES's category labels: give "
                    "--category-data DANKMEMES_FOLDER (or train on --data-format dankmemes)"
                )
            if self.data_format == "pairs":
                raise ValueError(f"--arch {self.arch} trains on per-image scores, not on pairs")
        if self.weight_decay is None:
            self.weight_decay = DEFAULT_WEIGHT_DECAY[family]
        return self

    def record(self) -> dict[str, Any]:
        """The settings as the checkpoint records them: without the other architecture's."""
        others = VIRALNET_ONLY if self.arch == "lena" else LENA_ONLY
        return {k: v for k, v in asdict(self).items() if k not in others}

    @property
    def frozen_blocks(self) -> int:
        """--freeze-blocks, or the backbone's default when it was not given."""
        spec = backbone_spec(self.backbone)
        return spec.frozen_by_default if self.freeze_blocks is None else self.freeze_blocks


_FIELDS: dict[str, FieldInfo] = getattr(TrainConfig, "__pydantic_fields__")  # noqa: B009


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default(name: str) -> Any:
    return _FIELDS[name].default


def _flags_class() -> type[BaseSettings]:
    """TrainConfig's fields as the pydantic-settings model its CLI parser is built from."""
    fields = {name: (f.annotation, copy.copy(f)) for name, f in _FIELDS.items()}
    flags: type[BaseSettings] = create_model(  # type: ignore[call-overload]
        "TrainFlags", __base__=BaseSettings, __doc__=TrainConfig.__doc__, **fields
    )
    flags.model_config.update(
        SettingsConfigDict(
            cli_prog_name="viraliency-train",
            cli_kebab_case=True,
            cli_implicit_flags=True,
            cli_hide_none_type=True,
            cli_avoid_json=True,
        )
    )
    return flags


def given_flags(argv: Sequence[str]) -> dict[str, Any]:
    """The settings given on the command line, by field name (flags left out are absent).

    --help prints every flag with its help line and exits; an unknown flag exits with usage.
    """
    return CliSettingsSource(_flags_class(), cli_parse_args=list(argv))()


def make_config(values: dict[str, Any]) -> TrainConfig:
    """TrainConfig(**values), a bad value as a ConfigError naming the flag and what it accepts."""
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ConfigError(problems) from None
