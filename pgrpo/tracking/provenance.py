"""Where a run's inputs came from: git commit, Prefect flow run, DVC data hashes.

Plain files and subprocesses only: no mlflow, no dvc, and prefect only when the
process already runs inside Prefect. pgrpo.tracking.mlflow_tracking turns these into tags.

DVC hashes are read while `dvc repro` runs a stage ($DVC_STAGE set): the stage's
dependencies come from dvc.yaml (through DVC's API), their hashes from dvc.lock.
DVC rewrites a stage's own lock entry only after its command exits, so that entry
is the previous run's; the current hash of a dependency is the md5 that the stage
producing it recorded (it ran earlier in the same repro) or its <path>.dvc file.
Code dependencies are pinned by the git commit instead.

    from pgrpo.tracking.provenance import git_info, dvc_tags
    git_info()                      # {"commit": "21ce38e...", "dirty": "false"}
    dvc_tags("train_policy@pgrpo")  # ({"dvc.data/processed": "3f2a....dir", ...}, {...})
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml


def git_info(cwd: str | Path = ".") -> dict[str, str]:
    """{"commit": sha, "dirty": "true"/"false"}; {} outside a git repo or without git.

    Dirty: tracked files differ from the commit, DVC's dvc.lock and .gitignore aside.
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.strip()
        # dvc.lock and .gitignore files are DVC's own bookkeeping, rewritten by `dvc repro`
        # after each stage: they would mark every later stage dirty.
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":(exclude,glob)**/dvc.lock", ":(exclude,glob)**/.gitignore"],
            cwd=cwd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": commit, "dirty": str(bool(status.strip())).lower()}


def prefect_tags() -> dict[str, str]:
    """The Prefect flow run this process runs in, if any (prefect is not imported otherwise)."""
    if "prefect" not in sys.modules and not os.environ.get("PREFECT__FLOW_RUN_ID"):
        return {}
    try:
        from prefect.runtime import flow_run
        run_id = flow_run.id
    except Exception:  # noqa: BLE001 - an old or broken prefect must not stop a stage
        return {}
    return {"prefect.flow_run_id": str(run_id), "prefect.flow_run_name": str(flow_run.name)} \
        if run_id else {}


def pipeline_key(params_file: str | Path, commit: str | None) -> str:
    """sha256 of the params file's bytes and the git commit: one key per pipeline run under DVC."""
    path = Path(params_file)
    h = hashlib.sha256(path.read_bytes() if path.is_file() else b"")
    h.update(b"\0" + (commit or "no-git").encode())
    return h.hexdigest()[:16]


def _dvc_md5(root: Path, path: str) -> str | None:
    dvc_file = root / f"{path}.dvc"
    if not dvc_file.is_file():
        return None
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    return outs[0].get("md5")


def stage_deps(stage: str, root: str | Path = ".") -> list[str] | None:
    """Dependency paths of a DVC stage as dvc.yaml declares them (foreach resolved); None if unknown.

    Asks DVC itself (~0.5 s; only called while DVC runs the stage, so dvc is installed).
    """
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            return [str(d.def_path) for d in repo.stage.get_target(stage).deps]
    except Exception:  # noqa: BLE001 - provenance must not fail a stage; the lock entry is next
        return None


def dvc_tags(stage: str, root: str | Path = ".") -> tuple[dict[str, str], dict[str, str]]:
    """(tags for the stage's child run, tags for the parent) from dvc.lock (see above).

    `stage` is DVC's stage address (`train_policy@pgrpo` for a foreach stage).
    """
    root = Path(root)
    lock_file = root / "dvc.lock"
    stages = (yaml.safe_load(lock_file.read_text()) or {}).get("stages") or {} \
        if lock_file.is_file() else {}
    all_outs = {o["path"]: o["md5"] for st in stages.values() for o in st.get("outs") or []
                if o.get("md5")}
    produced = {o["path"]: o["md5"] for name, st in stages.items() if name != stage
                for o in st.get("outs") or [] if o.get("md5")}
    deps = stage_deps(stage, root)
    if deps is None:  # the paths (not the hashes) of the stage's own last lock entry
        deps = [d["path"] for d in (stages.get(stage) or {}).get("deps") or []]
    child = {}
    for path in deps:
        # A file inside a directory out (data/processed/pairs.parquet) is pinned by the dir's hash.
        owner = next((p for p in produced if path == p or path.startswith(p.rstrip("/") + "/")), None)
        md5 = produced[owner] if owner else _dvc_md5(root, path)
        if md5:
            child[f"dvc.{owner or path}"] = md5
    return child, {f"dvc.{p}": md5 for p, md5 in all_outs.items()}
