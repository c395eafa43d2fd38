"""`viraliency score PATH...`: a table, or rows appended to --out (CSV or JSON lines)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from tqdm import tqdm

from cli.options import MAX_PIXELS, chosen_platform, load_engine, model_options, platform_option
from cli.output import Row, RowWriter, done_paths, out_format, table
from cli.paths import expand
from cli.scoring import Skipped, score_files

EXIT_SKIPPED = 1  # some files could not be scored (each is named on stderr)


@click.command(short_help="Score files, folders and globs: a table, CSV or JSON lines.")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append rows to this .csv or .jsonl file instead of printing a table; paths "
    "already in it are skipped, so the same command resumes an interrupted run.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=min(8, os.cpu_count() or 1),
    show_default=True,
    help="Threads that read and decode images.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@platform_option
@model_options
def score(
    paths: tuple[str, ...],
    out: Path | None,
    batch_size: int,
    workers: int,
    progress: bool,
    platform: str,
    checkpoint: Path,
    device: str,
) -> None:
    """Score image files, folders (searched recursively) and quoted globs ('shots/**/*.jpg').

    Each row has the path, image_id (SHA-256 of the file, as POST /score gives it), the raw
    score s(I) and its percentile among the checkpoint's calibration images. Files that
    cannot be scored are named on stderr and skipped; the exit status is then 1 (0 when every
    file was scored, 2 for a usage error).
    """
    if out is not None:
        out_format(out)  # a bad name fails before the model loads
    files = expand(paths)
    if not files:
        raise click.UsageError(f"no image files in {' '.join(paths)}")
    done = done_paths(out) if out is not None else set()
    todo = [path for path in files if path not in done]
    if done:
        click.echo(f"{len(files) - len(todo)} of {len(files)} already in {out}; resuming", err=True)
    engine = load_engine(checkpoint, device)
    chosen = chosen_platform(engine, platform, checkpoint)
    rows: list[Row] = []
    skipped: list[Skipped] = []
    writer = RowWriter(out) if out is not None else None
    bar = tqdm(total=len(todo), unit="img", disable=not progress or None, dynamic_ncols=True)

    def on_rows(batch: list[Row]) -> None:
        if writer is not None:
            writer.write(batch)
        else:
            rows.extend(batch)
        bar.update(len(batch))

    def on_skip(item: Skipped) -> None:
        skipped.append(item)
        bar.update(1)
        tqdm.write(f"skipped {item.path}: {item.reason}", file=sys.stderr)

    try:
        score_files(engine, todo, batch_size, workers, MAX_PIXELS, on_rows, on_skip, chosen)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if writer is None and rows:
        click.echo(table(rows))
    scored = len(todo) - len(skipped)
    where = f" into {out}" if out is not None else ""
    click.echo(f"scored {scored}{where}, skipped {len(skipped)} bad file(s)", err=True)
    if skipped:
        raise SystemExit(EXIT_SKIPPED)
