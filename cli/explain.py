"""`viraliency compare A B`, `heatmap IMAGE -o OUT`, `regions IMAGE`: one or two images."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import click

from app.heatmap import COLORMAPS, DEFAULT_MAX_SIDE, HeatmapOptions, draw
from app.regions import salient_regions
from app.routers.compare import sigmoid
from app.store import StoredImage
from cli.images import load_or_fail
from cli.options import MAX_PIXELS, chosen_platform, load_engine, model_options, platform_option

IMAGE = click.Path(exists=True, dir_okay=False)
SUFFIX_FORMATS: dict[str, Literal["png", "jpeg"]] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}


@click.command(short_help="Which of two images is more viral, and how likely.")
@click.argument("image_a", type=IMAGE)
@click.argument("image_b", type=IMAGE)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as POST /compare does.")
@platform_option
@model_options
def compare(
    image_a: str, image_b: str, as_json: bool, platform: str, checkpoint: Path, device: str
) -> None:
    """Which of two images is more viral: P(A more viral) = sigmoid(s(A) - s(B)), eq. (1)."""
    engine = load_engine(checkpoint, device)
    chosen = chosen_platform(engine, platform, checkpoint)
    a, b = (load_or_fail(path, engine.input_size, MAX_PIXELS) for path in (image_a, image_b))
    sa, sb = (p.choose(chosen)[0] for p in engine.predict([a.prepared.pixels, b.prepared.pixels]))
    probability = sigmoid(sa - sb)
    winner = "a" if sa >= sb else "b"
    if as_json:
        entries = {
            side: {"path": item.path, "image_id": item.image_id, "score": score}
            for side, item, score in (("a", a, sa), ("b", b, sb))
        }
        click.echo(
            json.dumps({"probability_a_more_viral": probability, "winner": winner, **entries})
        )
        return
    click.echo(f"A  {a.path}  score {sa:.4f}")
    click.echo(f"B  {b.path}  score {sb:.4f}")
    name = a.path if winner == "a" else b.path
    click.echo(f"P(A more viral) = {probability:.3f}; winner: {winner.upper()} ({name})")


@click.command(short_help="Draw an image's viraliency map (overlay or map alone).")
@click.argument("image", type=IMAGE)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the picture: .png, .jpg or .jpeg.",
)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option(
    "--colormap",
    type=click.Choice(sorted(COLORMAPS), case_sensitive=False),
    default="jet",
    show_default=True,
)
@click.option(
    "--mode",
    type=click.Choice(["overlay", "map"]),
    default="overlay",
    show_default=True,
    help="overlay: blended over the photo; map: the coloured map alone.",
)
@click.option(
    "--max-side",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SIDE,
    show_default=True,
    help="Shrink so the longer side fits (as GET /heatmap does by default).",
)
@platform_option
@model_options
def heatmap(
    image: str,
    out: Path,
    alpha: float,
    colormap: str,
    mode: Literal["overlay", "map"],
    max_side: int,
    platform: str,
    checkpoint: Path,
    device: str,
) -> None:
    """Draw IMAGE's viraliency map (eq. 7) as GET /heatmap does, into --out."""
    image_format = SUFFIX_FORMATS.get(out.suffix.lower())
    if image_format is None:
        raise click.BadParameter("the name must end in .png, .jpg or .jpeg", param_hint="--out")
    engine = load_engine(checkpoint, device)
    chosen = chosen_platform(engine, platform, checkpoint)
    item = load_or_fail(image, engine.input_size, MAX_PIXELS)
    (prediction,) = engine.predict([item.prepared.pixels])
    score, viraliency = prediction.choose(chosen)
    stored = StoredImage(item.data, viraliency, item.prepared.width, item.prepared.height)
    options = HeatmapOptions(alpha, colormap.lower(), image_format, mode, max_side)
    out.write_bytes(draw(stored, options, MAX_PIXELS))
    click.echo(f"wrote {out} (score {score:.4f})", err=True)


@click.command(short_help="An image's virally salient regions as boxes.")
@click.argument("image", type=IMAGE)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.2,
    show_default=True,
    help="Keep pixels whose map value is at least this fraction of the maximum.",
)
@click.option("--max-regions", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as GET /regions does.")
@platform_option
@model_options
def regions(
    image: str,
    threshold: float,
    max_regions: int,
    as_json: bool,
    platform: str,
    checkpoint: Path,
    device: str,
) -> None:
    """The virally salient regions of IMAGE as boxes (x, y, width, height in pixels)."""
    engine = load_engine(checkpoint, device)
    chosen = chosen_platform(engine, platform, checkpoint)
    item = load_or_fail(image, engine.input_size, MAX_PIXELS)
    (prediction,) = engine.predict([item.prepared.pixels])
    width, height = item.prepared.width, item.prepared.height
    viraliency = prediction.choose(chosen)[1]
    found = salient_regions(viraliency, width, height, threshold, max_regions)
    if as_json:
        boxes = [asdict(region) for region in found]
        answer = {"image_id": item.image_id, "width": width, "height": height}
        click.echo(json.dumps({**answer, "threshold": threshold, "regions": boxes}))
        return
    click.echo(f"{item.path}: {width}x{height}, {len(found)} region(s) at {threshold:g} x max")
    for region in found:
        click.echo(
            f"  x={region.x} y={region.y} width={region.width} height={region.height} "
            f"peak={region.peak:.4f} mean={region.mean:.4f}"
        )
