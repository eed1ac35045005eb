"""Flow runs on a Prefect work pool, each in its own checkout of the commit it was deployed from.

    prefect work-pool create pgrpo --type process                 # once (or: --pool makes it)
    python -m flows.workpool --pool pgrpo --tracking_uri http://mlflow-host:5000
    prefect worker start --pool pgrpo --limit 2                   # on each machine, in the venv
    prefect deployment run pgrpo-pipeline/pool-<commit> -p steps=4 -p seed=1

What a run does (the deployment's pull step and the flow's `dvc_sync`):
1. the worker makes a temporary folder and `git clone`s the repository at the deployed
   commit into it (Prefect's git_clone step): a checkout no other run touches;
2. the flow writes the run's knobs into that checkout's params.yaml and `dvc pull`s what its
   dvc.lock lists from the DVC remote (.dvc/config of that commit); stages then up to date
   are not run;
3. the stages run, each `dvc commit`ted, recording to the MLflow server of $MLFLOW_TRACKING_URI
   (set here for every run of the deployment: a run's folder is deleted afterwards);
4. the run is saved as a DVC experiment named after the flow run and pushed: its params.yaml
   and dvc.lock to the repository (a git ref under refs/exps), its outputs to the DVC
   remote. `dvc exp pull origin <run> && dvc exp apply <run> && dvc pull` brings it anywhere.

So two runs with different knobs proceed at once (--limit 2) without sharing a file. The
worker's Python environment runs the checkout's code (Prefect puts the checkout first on
sys.path), so install the same dependencies as the commit (`make`). Docker or Kubernetes
pools: the Dockerfile builds that environment; `prefect work-pool create pgrpo-docker --type
docker` and `--image` below (docs/scaling-out.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def head_commit(repo: str = ".") -> str:
    return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def ensure_pool(pool: str, kind: str = "process") -> None:
    """Create the work pool unless it exists (as `prefect work-pool create POOL --type KIND`)."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type=kind))


def deploy(pool: str, repository: str, commit: str, tracking_uri: str | None = None,
           name: str | None = None, image: str | None = None) -> str:
    """Deploy pgrpo-pipeline from `repository` at `commit` to `pool`; returns
    'pgrpo-pipeline/<name>' (default name: pool-<first 8 of commit>)."""
    from prefect.runner.storage import GitRepository

    from flows.pipeline import pipeline

    name = name or f"pool-{commit[:8]}"
    env = {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}
    job_variables = {"env": env, **({"image": image} if image else {})}
    source = pipeline.from_source(GitRepository(url=repository, commit_sha=commit),
                                  "flows/pipeline.py:pipeline")
    source.deploy(name=name, work_pool_name=pool, parameters={"dvc_sync": True},
                  job_variables=job_variables, tags=["pgrpo", "work-pool"], build=False,
                  push=False, print_next_steps=False,
                  description=f"pgrpo-pipeline at {commit[:12]}, each run in its own checkout")
    return f"pgrpo-pipeline/{name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="deploy pgrpo-pipeline to a Prefect work pool")
    parser.add_argument("--pool", required=True, help="work pool (created as a process pool if missing)")
    parser.add_argument("--repository", default=None,
                        help="git URL or path the workers clone (default: this repo's origin, "
                             "else this folder)")
    parser.add_argument("--commit", default=None, help="commit to run (default: HEAD)")
    parser.add_argument("--tracking_uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="MLflow server the runs record to (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--name", default=None, help="deployment name (default: pool-<commit>)")
    parser.add_argument("--image", default=None, help="image of a docker / kubernetes pool")
    a = parser.parse_args(argv)
    origin = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True,
                            text=True, check=False).stdout.strip()
    repository = a.repository or origin or os.getcwd()
    if not a.tracking_uri or a.tracking_uri.startswith(("sqlite:", "file:")):
        print("warning: no MLflow server (--tracking_uri): each run records into its own "
              "checkout, which the worker deletes", file=sys.stderr)
    ensure_pool(a.pool)
    print(deploy(a.pool, repository, a.commit or head_commit(), a.tracking_uri, a.name, a.image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
