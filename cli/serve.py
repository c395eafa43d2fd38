"""`viraliency serve` (and `viraliency-serve`): the REST service; flags override VIRALIENCY_*."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from app.settings import Settings


@click.command(short_help="Serve the REST API, the web page and the docs.")
@click.option("--host", help="Address to listen on.  [default: $VIRALIENCY_HOST or 127.0.0.1]")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port to listen on.  [default: $VIRALIENCY_PORT or 8000]",
)
@click.option(
    "--checkpoint",
    type=click.Path(file_okay=False, path_type=Path),
    help="Checkpoint folder.  [default: $VIRALIENCY_CHECKPOINT or weights]",
)
@click.option("--device", help="auto, cpu, cuda or cuda:N.  [default: $VIRALIENCY_DEVICE or auto]")
@click.option("--max-batch-size", type=click.IntRange(min=1), help="Most images per forward pass.")
@click.option("--decode-threads", type=click.IntRange(min=1), help="Threads decoding uploads.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(**flags: Any) -> None:
    """Serve the checkpoint over HTTP: the web page at /, the API docs at /docs.

    Every other setting comes from its VIRALIENCY_* variable (README, Settings); a flag given
    here wins over the variable.
    """
    from app.main import run

    overrides = {name: value for name, value in flags.items() if value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    run(settings)


def main() -> None:
    """`viraliency-serve`, the same command under its old name."""
    serve(prog_name="viraliency-serve")
