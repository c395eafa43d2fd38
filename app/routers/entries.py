"""Scored images as the JSON entries /score, /compare and /rank share."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request

from app.schemas import ScoreEntry
from app.service import Scored


def heatmap_url(request: Request, image_id: str) -> str:
    """A URL relative to the server (behind a proxy's root_path too), for GET /heatmap."""
    path = request.scope.get("root_path", "") + request.app.url_path_for("get_heatmap")
    return f"{path}?{urlencode({'image_id': image_id})}"


def score_entry(request: Request, scored: Scored) -> ScoreEntry:
    return ScoreEntry(
        image_id=scored.image_id,
        score=scored.score,
        percentile=scored.percentile,
        heatmap_url=heatmap_url(request, scored.image_id) if scored.kept else None,
        width=scored.width,
        height=scored.height,
    )
