"""What a stage's result depends on, as one hash: its params, the content of its inputs
and the code it runs. Two readers: the Prefect tasks' cache key (tasks/stages.py) and
pgrpo.experiments.compare, which skips a seed's evaluation whose key and outputs are unchanged.

    from pgrpo.orchestration.stage_key import stage_cache_key
    stage_cache_key("train_policy", "params.yaml", "pgrpo")           # 'a3f1...'
    stage_cache_key("evaluate", "models/compare/seed1/params.yaml",
                    policy_root="models/compare/seed1")               # a comparison's seed
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pgrpo.core import paths
from pgrpo.core.config import policy_config, read_params
from pgrpo.core.hashing import file_sha256, path_sha256
from pgrpo.orchestration.stage_code import ROOT as CODE_ROOT
from pgrpo.orchestration.stage_code import stage_code
from pgrpo.stages import registry


def stage_params(stage: str, params_file: str | Path, algorithm: str | None = None) -> dict:
    """The params entries the stage reads (pgrpo.stages.registry: as dvc.yaml's `params`)."""
    params = read_params(params_file)
    out = {}
    for name in registry.stage(stage).params_of(algorithm):
        section, _, entry = name.partition(".")
        value = params.get(section)
        out[name] = (value or {}).get(entry) if entry else value
    return out


def stage_inputs(stage: str, params_file: str | Path, algorithm: str | None = None,
                 policy_root: str | Path | None = None) -> list[Path]:
    """The files a stage reads besides its params: the registry's sources and inputs (dvc.yaml's data
    deps), plus those its params name (prepare.path; a policy's model, prompts, groups and
    reward when they point elsewhere; built-in names are no paths). `policy_root`
    (evaluate): the policies are read from there, model and metrics of each algorithm in
    the params file, instead of from models/policy."""
    named: list = []
    if stage == "prepare":
        named = [(read_params(params_file).get("prepare") or {}).get("path")]
    elif stage == "train_policy":
        cfg = policy_config(params_file, algorithm)
        named = [cfg.model, cfg.prompts, cfg.groups, cfg.reward]
    listed = [*registry.stage(stage).paths("sources", algorithm),
              *registry.stage(stage).paths("inputs", algorithm)]
    if policy_root is not None:
        if stage != "evaluate":
            raise ValueError(f"policy_root: only evaluate reads policies, not {stage!r}")
        policies = [Path(policy_root) / a / p.relative_to(paths.MODELS / "policy" / a)
                    for a in read_params(params_file).get("algorithms") or {}
                    for p in registry.stage("train_policy").paths("outputs", a)]
        listed = [p for p in listed if p != paths.MODELS / "policy"] + policies
    return list(dict.fromkeys([*listed, *(Path(p) for p in named if p and Path(p).exists())]))


def code_hashes(stage: str) -> dict[str, str]:
    """Content hashes of the code `stage` runs (pgrpo.orchestration.stage_code)."""
    return {p.as_posix(): file_sha256(CODE_ROOT / p) for p in sorted(stage_code(stage))}


def stage_cache_key(stage: str, params_file: str | Path, algorithm: str | None = None,
                    policy_root: str | Path | None = None) -> str:
    """sha256 of (stage, algorithm, params sections, input hashes, hashes of the code it runs).

    The code (pgrpo.orchestration.stage_code: every module the stage imports) is in the key, so an edited
    stage runs again instead of being served, and then recorded in DVC, as current."""
    record = {"stage": stage, "algorithm": algorithm,
              "params": stage_params(stage, params_file, algorithm),
              "inputs": {str(p): path_sha256(p)
                         for p in stage_inputs(stage, params_file, algorithm, policy_root)},
              "code": code_hashes(stage)}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def result_state(stage: str, params_file: str | Path, outputs: list[Path],
                 algorithm: str | None = None, policy_root: str | Path | None = None) -> dict:
    """A stage's key and the hashes of the outputs it left: a recorded result may stand in
    for running the stage only while both are unchanged (an output deleted or rewritten
    since by another run, other params or code: run it again)."""
    return {"key": stage_cache_key(stage, params_file, algorithm, policy_root),
            "outputs": {str(p): path_sha256(p) for p in outputs}}
