"""Serve the pgrpo-pipeline deployments, so that runs can be started from the Prefect UI.

    scripts/ui.sh start            # server + MLflow UI + this, on localhost (stop: ui.sh stop)
    python -m flows.serve          # just this; needs PREFECT_API_URL of a running server
    prefect deployment run pgrpo-pipeline/params              # from another shell
    prefect deployment run pgrpo-pipeline/params -p steps=2 -p 'algorithms=["pgrpo"]'

Deployments (flow runs execute in this process's working directory: the repo root):
- pgrpo-pipeline/params   params.yaml, defaults as `dvc repro`; the form sets the knobs
- pgrpo-pipeline/smoke    configs/smoke.yaml (tiny models, seconds per stage), if present
- pgrpo-compare/params    algorithms x seeds on params.yaml's data (flows/compare.py)

Stop this process (Ctrl-C, or ui.sh stop) before the server: a runner whose server went
away first hangs on shutdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import serve

from flows.compare import compare
from flows.pipeline import pipeline

SMOKE = Path("configs/smoke.yaml")


def deployments() -> list:
    out = [pipeline.to_deployment(
        name="params", parameters={"params_file": "params.yaml"}, tags=["pgrpo"],
        description="the full pipeline on params.yaml (what dvc repro runs)")]
    if SMOKE.is_file():
        out.append(pipeline.to_deployment(
            name="smoke", parameters={"params_file": str(SMOKE)}, tags=["pgrpo", "smoke"],
            description="tiny models on configs/smoke.yaml: checks the wiring in minutes"))
    out.append(compare.to_deployment(
        name="params", parameters={"params_file": "params.yaml"}, tags=["pgrpo", "compare"],
        description="every algorithm of params.yaml's `compare` section over its seeds"))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="serve the pgrpo-pipeline deployments")
    parser.add_argument("--limit", type=int, default=1,
                        help="flow runs at once, all deployments together: they share data/ and "
                             "models/, so more than 1 only with separate working copies")
    args = parser.parse_args(argv)
    serve(*deployments(), limit=args.limit)


if __name__ == "__main__":
    main()
