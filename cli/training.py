"""`viraliency train ...` and `viraliency evaluate ...`: the training package's own commands.

Arguments pass through unchanged (`--help` included: it prints their own help). `training`
is imported only here, when one of them runs, so scoring works where it is not installed.
"""

from __future__ import annotations

from pathlib import Path

import click

PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@click.command(
    context_settings=PASS_THROUGH, add_help_option=False, short_help="Train (viraliency-train)."
)
@click.option(
    "--checkpoint",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue from this checkpoint (the same as --resume).",
)
@click.pass_context
def train(ctx: click.Context, checkpoint: Path | None) -> None:
    """Train a network (viraliency-train); `viraliency train --help` lists its flags."""
    from training.train import main

    resume = ["--resume", str(checkpoint)] if checkpoint is not None else []
    main([*resume, *ctx.args])


@click.command(
    context_settings=PASS_THROUGH,
    add_help_option=False,
    short_help="Evaluate a checkpoint (viraliency-evaluate).",
)
@click.option(
    "--checkpoint",
    type=click.Path(file_okay=False, path_type=Path),
    help="The checkpoint to evaluate.  [default: weights, unless given as the first argument]",
)
@click.pass_context
def evaluate(ctx: click.Context, checkpoint: Path | None) -> None:
    """Evaluate a checkpoint (viraliency-evaluate); `viraliency evaluate --help` for flags."""
    from training.evaluate import main

    args = list(ctx.args)
    wants_help = "-h" in args or "--help" in args
    given_positionally = bool(args) and not args[0].startswith("-")
    if checkpoint is not None or not (given_positionally or wants_help):
        args.insert(0, str(checkpoint or Path("weights")))
    main(args)
