"""`python -m training.viralnet ARGS` is `viraliency-train --arch viralnet-m ARGS` (an --arch
in ARGS wins), kept for the commands written before the two trainings shared one CLI. The
ViralNet fit itself is training/viralnet_fit.py."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from training.train import main as train_main


def main(argv: Sequence[str] | None = None) -> None:
    train_main(["--arch", "viralnet-m", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
