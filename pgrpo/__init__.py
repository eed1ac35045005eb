"""pgrpo: Personalized GRPO (P-GRPO) and the pipeline around it.

The library imports only torch / transformers / accelerate at its core, so the
trainer runs on machines without the MLOps stack (Prefect, MLflow, DVC, pandera).
"""

import os

# No telemetry from the libraries we drive (they would try to reach the network). Tests
# that start subprocesses pass the same block on (the Makefile and scripts/ui.sh export
# it for the shell tools).
NO_TELEMETRY = {
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
for _key, _value in NO_TELEMETRY.items():
    os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
