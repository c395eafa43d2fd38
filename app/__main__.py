"""`python -m app`: serve the checkpoint in VIRALIENCY_CHECKPOINT (default weights/)."""

from app.main import run

run()
