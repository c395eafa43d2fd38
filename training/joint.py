"""Training on several datasets at once: engagement standardised per dataset.

Upvotes on Reddit (median ~14,000) and likes on Instagram (median ~38) are not one scale, so
each dataset's log engagement is standardised before the sets are pooled:

    z_i = (log(1 + s_i) - mean_d) / sd_d          over dataset d's training images
    s'_i = exp(MU + SIGMA * z_i) - 1              a pseudo-count on one shared scale

The pair protocols (`ratio_pairs`: pairs >= 2x apart after +1) and the ridge fit (on
log(1 + s')) then run unchanged on s'. A pair of images from different datasets compares
their standardised engagement, i.e. how viral each is for its own platform.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MU = 5.0  # log(1 + s') of an image of average engagement for its dataset
SIGMA = 1.5  # log(1 + s') per standard deviation: 2x apart is ~0.46 sd


def joint_scores(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Pseudo-counts s' (see above) of every dataset's images, concatenated in order."""
    parts = []
    for s in scores:
        y = np.log1p(np.asarray(s, dtype=np.float64))
        parts.append(np.expm1(MU + SIGMA * (y - y.mean()) / (y.std() + 1e-12)))
    return np.concatenate(parts)
