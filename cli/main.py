"""The `viraliency` command group."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from cli.explain import compare, heatmap, regions
from cli.score import score
from cli.serve import serve
from cli.training import evaluate, train


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    try:
        number = version("viraliency")
    except PackageNotFoundError:  # run from a checkout or the service image (python -m cli)
        from app.main import create_app

        number = create_app().version
    click.echo(f"viraliency {number}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def cli() -> None:
    """Score, compare and explain images with a Viraliency checkpoint, offline.

    Every command takes --checkpoint (default: weights/) and runs without the HTTP server.
    """


for command in (score, compare, heatmap, regions, serve, train, evaluate):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="viraliency")
