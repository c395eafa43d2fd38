"""One prediction interface for every architecture the checkpoint format holds.

    predict(net, images) -> scores (B,), maps (B, h, w), transforms (B, K, 3) or None,
                            per-platform scores (B, P) and maps (B, P, h, w) or None

LENA (model/network.py) gives its eq. (7) viraliency maps and no transforms; ViralNet
(model/viralnet.py) gives the ranker's class activation map on the whole image and the
spatial transformers' (s, t_x, t_y) per pyramid level (model/stn.py says what they mean).
A LENA network with per-platform heads gives the gate's mixture as `scores`/`maps` and each
platform's own head beside it.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from model.network import ViralityNet
from model.viralnet import ViralNet


class Predicted(NamedTuple):
    scores: Tensor  # (B,)
    maps: Tensor  # (B, h, w)
    transforms: Tensor | None  # (B, K, 3), ViralNet only
    platform_scores: Tensor | None = None  # (B, P), per-platform heads only
    platform_maps: Tensor | None = None  # (B, P, h, w)


def predict(net: ViralityNet | ViralNet, images: Tensor) -> Predicted:
    """Scores, maps and (for ViralNet) crop transforms of a normalised (B, 3, S, S) batch."""
    if isinstance(net, ViralNet):
        return Predicted(*net.explain(images))
    if net.config.platforms:
        scores, maps = net.platform_viraliency(images)
        return Predicted(scores[:, 0], maps[:, 0], None, scores[:, 1:], maps[:, 1:])
    scores, maps = net.viraliency(images)
    return Predicted(scores, maps, None)


def level_scales(levels: int) -> list[float]:
    """The resolution of each pyramid level relative to the image: 1, 0.5, 0.25, ..."""
    return [1.0 / 2**k for k in range(levels)]
