"""The CPU forward pass's images/s by batch size: what the service times at start-up
(`Engine.batch_rates`, `VIRALIENCY_CPU_BATCH_SIZING`) and the batch size it then chooses.

    PYTHONPATH=. .venv/bin/python bench/batch_rates.py --checkpoint weights --largest 16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.engine import Engine, choose_batch_size
from app.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=Path("weights"))
    parser.add_argument("--largest", type=int, default=64)
    args = parser.parse_args()
    engine = Engine.from_settings(Settings(checkpoint=args.checkpoint, device="cpu"))
    rates = engine.batch_rates(args.largest)
    print(f"{args.checkpoint}, {engine.input_size} px, CPU\n")
    print("| batch | images/s | ms per image |\n| ---: | ---: | ---: |")
    for size, rate in rates.items():
        print(f"| {size} | {rate:.1f} | {1000 / rate:.0f} |")
    print(f"\nchosen: {choose_batch_size(rates)}")


if __name__ == "__main__":
    main()
