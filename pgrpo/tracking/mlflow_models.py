"""The reward model and the policies as MLflow models: logged, registered, champion alias.

Each is an MLflow pyfunc model "from code": the weights are the stage's own folder,
copied as an artifact (safetensors + json), the wrapper is a two-line script that
names a class below (no pickle anywhere), the pgrpo package travels with it
(code_paths), and pip_requirements are pinned explicitly from this environment:
inferring them costs seconds and pins unrelated packages (ENVIRONMENT.md).

    reward model:  predict(DataFrame[prompt, response, group]) -> scores (float array)
    policy:        predict(DataFrame[prompt], params={"max_new_tokens": 64}) -> completions
                   (greedy, the tokenizer's chat template applied)

Registered names: pgrpo-reward-model, pgrpo-policy. Versions are tagged with
pgrpo.algorithm (policies), pgrpo.parent_run_id (the pipeline run) and the git
commit; `promote_best_policy` (the evaluate stage) sets the alias `champion` on the
best policy version of the current pipeline run by its headline metric.

    with stage_run("train_policy", cfg, algorithm="pgrpo"):
        version = log_policy("models/policy/pgrpo/model", "pgrpo")
    with stage_run("evaluate", cfg):
        promote_best_policy({"pgrpo": 0.71, "grpo": 0.64}, "eval/reward")
    model = mlflow.pyfunc.load_model("models:/pgrpo-policy@champion")
    model.predict(pd.DataFrame({"prompt": ["Any advice on tea?"]}))

This module imports mlflow at the top: import it only where mlflow is installed.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

import pgrpo
from pgrpo.tracking.mlflow_names import active_run_id
from pgrpo.tracking.mlflow_tracking import parent_run_id
from pgrpo.tracking.provenance import git_info

REWARD_MODEL_NAME = "pgrpo-reward-model"
POLICY_NAME = "pgrpo-policy"
CHAMPION = "champion"
# What loading the wrappers imports (pgrpo itself travels as code_paths).
REQUIREMENTS = ["torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas",
                "pydantic", "pyyaml", "mlflow"]


def pip_requirements() -> list[str]:
    """REQUIREMENTS pinned to the installed versions (local tags such as +cpu dropped)."""
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            out.append(name)
    return out


class RewardModelPyfunc(mlflow.pyfunc.PythonModel):
    """Scores (prompt, response) pairs for a named preference group."""

    def load_context(self, context) -> None:
        from pgrpo.stages.reward.reward_model import load_reward_model

        self.model = load_reward_model(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        import torch

        groups = model_input["group"].astype(str)
        unknown = sorted(set(groups) - set(self.model.group_map))
        if unknown:
            raise ValueError(f"groups {unknown} are not in the reward model; it knows "
                             f"{sorted(self.model.group_map)}")
        ids = torch.tensor([self.model.group_map[g] for g in groups])
        return self.model.score(model_input["prompt"].astype(str).tolist(),
                                model_input["response"].astype(str).tolist(), ids).numpy()


class PolicyPyfunc(mlflow.pyfunc.PythonModel):
    """Greedy chat completions of a trained policy."""

    def load_context(self, context) -> None:
        import torch

        from pgrpo.core.models import load_policy

        self.model, self.tokenizer = load_policy(context.artifacts["model"])
        self.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        import torch

        from pgrpo.core.rollout import chat_prompts, eos_token_ids

        params = params or {}
        texts = chat_prompts(self.tokenizer, model_input["prompt"].astype(str).tolist(),
                             params.get("system_prompt") or None)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                             add_special_tokens=False).to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(**enc, do_sample=False,
                                      max_new_tokens=int(params.get("max_new_tokens", 64)),
                                      eos_token_id=eos_token_ids(self.model, self.tokenizer),
                                      pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                           skip_special_tokens=True)


REWARD_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt"), ColSpec("string", "response"),
                   ColSpec("string", "group")]),
    outputs=Schema([ColSpec("float", "score")]))
POLICY_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt")]),
    outputs=Schema([ColSpec("string", "completion")]),
    params=ParamSchema([ParamSpec("max_new_tokens", "long", 64),
                        ParamSpec("system_prompt", "string", "")]))


MODEL_SCRIPT = """# An MLflow model from code: the wrapper class comes from pgrpo (logged as code_paths).
import mlflow
from pgrpo.tracking.mlflow_models import {cls}
mlflow.models.set_model({cls}())
"""


def _log(folder: str | Path, name: str, wrapper: type, signature, registered: str | None,
         tags: dict[str, str]):
    """Log `folder` as a pyfunc model of the active run; register it with `tags` if asked."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder "
                                "(needs config.json and model.safetensors)")
    run_id = active_run_id()
    git = git_info()
    tags = {**tags, "pgrpo.parent_run_id": parent_run_id(run_id) or "",
            "pgrpo.run_id": run_id, "pgrpo.git_commit": git.get("commit", "")}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # An input example would run predict at log time (loading the model again): skipped.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        script = Path(tmp) / f"{name}_model.py"
        script.write_text(MODEL_SCRIPT.format(cls=wrapper.__name__))
        info = mlflow.pyfunc.log_model(
            name=name, python_model=str(script), artifacts={"model": str(folder)},
            code_paths=[str(Path(pgrpo.__file__).parent)], pip_requirements=pip_requirements(),
            signature=signature, tags=tags)
    if registered is None:
        return None
    return mlflow.register_model(info.model_uri, registered, tags=tags)


def log_reward_model(folder: str | Path, register: bool = True):
    """Log a train_reward output folder; returns the registered ModelVersion (None if not)."""
    config = Path(folder) / "config.json"
    groups = json.loads(config.read_text()).get("group_map", {}) if config.is_file() else {}
    return _log(folder, "reward_model", RewardModelPyfunc, REWARD_SIGNATURE,
                REWARD_MODEL_NAME if register else None, {"pgrpo.groups": ",".join(sorted(groups))})


def log_policy(folder: str | Path, algorithm: str, register: bool = True):
    """Log a trained policy's model/ folder; returns the ModelVersion tagged with `algorithm`."""
    return _log(folder, "policy", PolicyPyfunc, POLICY_SIGNATURE,
                POLICY_NAME if register else None, {"pgrpo.algorithm": algorithm})


def choose_champion(candidates: list[tuple[Any, float | None]]):
    """The version with the highest metric (None / NaN ignored); ties go to the newest version.

    `candidates`: (ModelVersion or version number, metric) pairs.
    """
    def number(v) -> int:
        return int(getattr(v, "version", v))

    valid = [(v, m) for v, m in candidates if m is not None and not math.isnan(m)]
    if not valid:
        raise ValueError(f"no candidate has a headline metric: {candidates}")
    return max(valid, key=lambda vm: (vm[1], number(vm[0])))[0]


def set_champion(model_name: str, version) -> None:
    """Point the alias `champion` of `model_name` at `version` (ModelVersion or number)."""
    mlflow.MlflowClient().set_registered_model_alias(
        model_name, CHAMPION, str(getattr(version, "version", version)))


def pipeline_versions(model_name: str = POLICY_NAME, parent: str | None = None) -> dict[str, Any]:
    """{algorithm: newest ModelVersion} registered under one pipeline run (default: the active one's)."""
    parent = parent or parent_run_id()
    found = mlflow.MlflowClient().search_model_versions(
        f"name = '{model_name}' and tags.`pgrpo.parent_run_id` = '{parent}'")
    out: dict[str, Any] = {}
    for v in sorted(found, key=lambda v: int(v.version)):
        out[v.tags.get("pgrpo.algorithm", "")] = v
    return out


def promote_best_policy(metric_by_algorithm: dict[str, float | None], metric_name: str,
                        parent: str | None = None):
    """Tag this pipeline run's policy versions with their metric; alias the best `champion`.

    Compares the algorithms of one pipeline run (same data, same evaluation), not versions
    across runs, whose evaluations need not be comparable. Returns the champion version.
    """
    versions = pipeline_versions(POLICY_NAME, parent)
    missing = sorted(set(metric_by_algorithm) - set(versions))
    if missing:
        warnings.warn(f"no {POLICY_NAME} version registered in this pipeline run for {missing}")
    client = mlflow.MlflowClient()
    candidates = []
    for alg, metric in metric_by_algorithm.items():
        if alg in versions:
            client.set_model_version_tag(POLICY_NAME, versions[alg].version,
                                         f"pgrpo.eval.{metric_name}", str(metric))
            candidates.append((versions[alg], metric))
    if not candidates:
        raise LookupError(f"no {POLICY_NAME} versions of algorithms {sorted(metric_by_algorithm)} "
                          f"in pipeline run {parent or parent_run_id()}; were they registered?")
    best = choose_champion(candidates)
    set_champion(POLICY_NAME, best)
    client.set_model_version_tag(POLICY_NAME, best.version, "pgrpo.headline_metric", metric_name)
    return best
