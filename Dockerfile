# The environment of a Docker (or Kubernetes) work pool's flow runs (flows/workpool.py):
# the project's dependencies, git for the per-run checkout, the SmolLM2 weights package.
# The code a run executes is not baked in: each run clones the deployed commit.
#   docker build -t pgrpo:$(git rev-parse --short HEAD) .
#   prefect work-pool create pgrpo-docker --type docker        # pip install prefect-docker
#   python -m flows.workpool --pool pgrpo-docker --image pgrpo:<tag> --tracking_uri http://mlflow:5000
#   prefect worker start --pool pgrpo-docker
# Not built or run on the project's machines (they have no Docker daemon); the process pool
# path is the tested one (tests/orchestration/test_workpool.py).
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 \
    MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PATH=/opt/pgrpo/.venv/bin:$PATH
WORKDIR /opt/pgrpo
# The same install as `make`: CPU torch pinned first, then the project and its extras.
COPY pyproject.toml Makefile ./
COPY pgrpo pgrpo
COPY flows flows
COPY tasks tasks
RUN make .venv/bin/.installed && .venv/bin/pip install -q prefect-docker
# A checkout's flows/ and pgrpo/ come first on sys.path in a flow run (Prefect inserts the
# working directory), so the installed copy only provides the dependencies.
WORKDIR /runs
