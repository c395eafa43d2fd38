"""Options every command shares, and loading the engine with errors a person can act on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from app.engine import Engine
from app.settings import Settings
from model.checkpoint import CheckpointError

F = TypeVar("F", bound=Callable[..., Any])

MAX_PIXELS = int(Settings.model_fields["max_pixels"].default)

checkpoint_option = click.option(
    "--checkpoint",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("weights"),
    show_default=True,
    help="Checkpoint folder (config.json + model.safetensors).",
)
device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.",
)


def model_options(command: F) -> F:
    """--checkpoint and --device."""
    return checkpoint_option(device_option(command))


platform_option = click.option(
    "--platform",
    default="auto",
    show_default=True,
    help="With a checkpoint that has a head per platform (e.g. instagram, reddit): use that "
    "platform's head; 'auto' lets the gate guess each image's platform.",
)


def chosen_platform(engine: Engine, platform: str, checkpoint: Path) -> str | None:
    """--platform as Prediction.choose takes it (None: the default); an unknown name is a usage
    error naming the choices."""
    try:
        return engine.info.resolve_platform(platform)
    except ValueError as exc:
        raise click.BadParameter(f"{checkpoint}: {exc}", param_hint="--platform") from None


def load_engine(checkpoint: Path, device: str) -> Engine:
    """The checkpoint on its device; a bad folder or device is a one-line error, exit 1."""
    try:
        engine = Engine.load(checkpoint, device)
    except (CheckpointError, RuntimeError, OSError) as exc:
        raise click.ClickException(f"cannot load {checkpoint}: {exc}") from None
    engine.tune_for_cpu()  # the service's CPU defaults: folded norms, channels_last
    return engine
