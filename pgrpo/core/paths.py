"""Every default path of the project, relative to the working directory (the repo root).

Raw inputs are never modified; stages write only under data/processed, models/
and reports/. Stage functions take paths as arguments: these are defaults.
"""

from pathlib import Path

DATA = Path("data")
PROCESSED = DATA / "processed"
MODELS = Path("models")
REPORTS = Path("reports")


def policy_dir(algorithm: str) -> Path:
    """Run folder of one trained policy: checkpoints/, metrics.jsonl, model/."""
    return MODELS / "policy" / algorithm
