"""MLflow tracking (pgrpo.tracking.mlflow_tracking, pgrpo.tracking.mlflow_models) against a real SQLite store.

    .venv/bin/python -m pytest -q tests/tracking/test_mlflow_tracking.py

Every test gets its own store (sqlite in tmp_path via $MLFLOW_TRACKING_URI) and works
in tmp_path. One test runs a real `dvc repro` of two stage processes in a temp git
repo; one logs, registers, loads and runs a tiny reward model and two tiny policies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from unittest.mock import ANY

import pandas as pd
import pytest
import torch
import yaml

mlflow = pytest.importorskip("mlflow")

from pgrpo.tracking.mlflow_tracking import (
    PARENT_ENV, TrackingConfig, log_artifact_files, log_figure,
    log_metrics_file, log_metrics_flat, pipeline_run, resolve_tracking_uri, stage_run,
)
from pgrpo.tracking.mlflow_names import flatten_params
from pgrpo.tracking.mlflow_logger import MlflowLogger
from pgrpo.tracking.provenance import dvc_tags

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def git(*args, cwd="."):
    subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True)


def parent_of(client, run_id):
    return client.get_run(run_id).data.tags["mlflow.parentRunId"]


# --------------------------------------------------------------------------- config and names


def test_tracking_uri_default_and_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingConfig()) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert resolve_tracking_uri(TrackingConfig()) == "sqlite:///elsewhere.db"
    assert resolve_tracking_uri(TrackingConfig(tracking_uri="http://mlflow:5000")) == "http://mlflow:5000"
    with pytest.raises(ValueError, match="experimnt"):
        TrackingConfig(experimnt="x")


def test_flatten_params_dotted_joined_and_cut():
    flat = flatten_params({"policy": {"lr": 3e-5, "lora": {"r": 0}}, "groups": ["a", "b"],
                           "seed": None, "long": "x" * 7000, "odd key!": 1})
    assert flat["policy.lr"] == "3e-05" and flat["policy.lora.r"] == "0"
    assert flat["groups"] == "a,b" and flat["seed"] == "None" and flat["odd key_"] == "1"
    assert len(flat["long"]) == 6000 and flat["long"].endswith("...")


def test_disabled_records_nothing(store, tmp_path):
    with pipeline_run(TrackingConfig(enabled=False)) as parent, \
            stage_run("prepare", TrackingConfig(enabled=False), {"a": 1}) as run:
        assert parent is None and run is None
    assert store.get_experiment_by_name("pgrpo") is None


# --------------------------------------------------------------------------- parent runs


def test_dvc_style_stages_share_a_parent_until_params_or_commit_change(store, tmp_path):
    git("init", "-q")
    git("add", "params.yaml")
    git("commit", "-qm", "params")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    cfg = TrackingConfig()
    # Two stages, each as its own process would call it: no parent id in the environment.
    with stage_run("prepare", cfg, {"prepare": {"seed": 0, "sizes": [3, 2]}}) as a:
        assert mlflow.active_run().info.run_id == a.info.run_id
    with stage_run("train_policy", cfg, {"lr": 1e-3}, algorithm="pgrpo",
                   tags={"pgrpo.seed": "3"}) as b:
        pass
    parent = parent_of(store, a.info.run_id)
    assert parent_of(store, b.info.run_id) == parent
    p = store.get_run(parent)
    assert p.info.status == "FINISHED" and p.data.tags["pgrpo.parent"] == "dvc"
    assert p.data.params == {"reward.epochs": "1", "policy.steps": "3"}  # the params file
    assert [f.path for f in store.list_artifacts(parent)] == ["params.yaml"]
    run_a, run_b = store.get_run(a.info.run_id), store.get_run(b.info.run_id)
    assert run_a.info.status == "FINISHED"
    assert run_a.data.params == {"prepare.seed": "0", "prepare.sizes": "3,2"}
    assert run_a.data.tags["pgrpo.stage"] == "prepare" and "pgrpo.algorithm" not in run_a.data.tags
    assert run_b.data.tags["pgrpo.algorithm"] == "pgrpo" and run_b.data.tags["mlflow.runName"] == "train_policy-pgrpo"
    assert run_b.data.tags["pgrpo.seed"] == "3" and "pgrpo.seed" not in run_a.data.tags
    assert run_b.data.tags["pgrpo.git_commit"] == commit == run_b.data.tags["mlflow.source.git.commit"]
    assert run_b.data.tags["pgrpo.git_dirty"] == "false"

    # New params file content: a new parent (a dirty tree, too).
    (tmp_path / "params.yaml").write_text("reward:\n  epochs: 2\n")
    with stage_run("prepare", cfg) as c:
        pass
    assert parent_of(store, c.info.run_id) != parent
    assert store.get_run(c.info.run_id).data.tags["pgrpo.git_dirty"] == "true"
    # The old params back, but a new commit: a new parent again.
    (tmp_path / "params.yaml").write_text("reward:\n  epochs: 1\npolicy:\n  steps: 3\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "code")
    with stage_run("prepare", cfg) as d:
        pass
    assert parent_of(store, d.info.run_id) not in {parent, parent_of(store, c.info.run_id)}
    # A failing stage fails its run and the parent, and the error goes through.
    with pytest.raises(RuntimeError, match="boom"), stage_run("assign_groups", cfg) as e:
        raise RuntimeError("boom")
    assert store.get_run(e.info.run_id).info.status == "FAILED"
    assert parent_of(store, e.info.run_id) == parent_of(store, d.info.run_id)
    assert store.get_run(parent_of(store, e.info.run_id)).info.status == "FAILED"


def test_pipeline_run_parent_reaches_stages_in_other_threads(store, monkeypatch):
    cfg = TrackingConfig()
    children = {}

    def stage(name, algorithm=None):  # as a Prefect task in a worker thread would
        with stage_run(name, cfg, algorithm=algorithm) as run:
            children[name] = run.info.run_id

    with pipeline_run(cfg, run_name="flow-1") as parent:
        assert store.get_run(parent).info.status == "RUNNING"
        assert os.environ[PARENT_ENV] == parent
        stage("prepare")
        worker = threading.Thread(target=stage, args=("train_policy", "grpo"))
        worker.start()
        worker.join()
    assert PARENT_ENV not in os.environ
    assert set(children) == {"prepare", "train_policy"}
    assert {parent_of(store, r) for r in children.values()} == {parent}
    p = store.get_run(parent)
    assert p.info.status == "FINISHED" and p.info.run_name == "flow-1"
    assert p.data.tags["pgrpo.parent"] == "pipeline_run" and p.data.params["policy.steps"] == "3"
    # A failing flow fails its parent; a bad id in the environment is a clear error.
    with pytest.raises(KeyError), pipeline_run(cfg) as failed:
        raise KeyError("x")
    assert store.get_run(failed).info.status == "FAILED"
    monkeypatch.setenv(PARENT_ENV, "0" * 32)
    with pytest.raises(ValueError, match=f"{PARENT_ENV}=0+ names no run"), stage_run("prepare", cfg):
        pass


# --------------------------------------------------------------------------- metrics and files


def test_step_metrics_per_group_and_summaries(store, tmp_path):
    nan = float("nan")
    with stage_run("train_policy", TrackingConfig(), algorithm="pgrpo") as run:
        logger = MlflowLogger()
        for step in range(1, 4):
            logger.log_metrics({"train/reward": step * 1.0, "train/reward/casual": step * 0.5,
                                "train/reward/formal": nan if step == 2 else -step,
                                "train/reward/jazz fans:old": 7.0, "perf/none": None}, step)
        logger.close()
        summary = log_metrics_flat({"pgrpo": {"casual": {"reward": 0.7}, "formal": {"reward": 0.2}},
                                    "note": "text", "list": [1, 2], "flag": True}, prefix="eval")
        jsonl = tmp_path / "metrics.jsonl"
        jsonl.write_text("".join(json.dumps({"step": s, "rm/loss": 1.0 / s}) + "\n" for s in (1, 2)))
        assert log_metrics_file(jsonl) == 2
    hist = {k: [(m.step, m.value) for m in store.get_metric_history(run.info.run_id, k)]
            for k in ("train/reward", "train/reward/casual", "train/reward/formal", "rm/loss")}
    assert hist["train/reward"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert hist["train/reward/casual"] == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert hist["train/reward/formal"] == [(1, -1.0), (3, -3.0)]  # the NaN step dropped
    assert hist["rm/loss"] == [(1, 1.0), (2, 0.5)]
    metrics = store.get_run(run.info.run_id).data.metrics
    assert metrics["train/reward/jazz fans_old"] == 7.0 and "perf/none" not in metrics
    assert summary == {"eval/pgrpo/casual/reward": 0.7, "eval/pgrpo/formal/reward": 0.2}
    assert metrics["eval/pgrpo/formal/reward"] == 0.2 and not any(k.startswith("eval/note") for k in metrics)
    # A wrong run id fails at once. A store that keeps failing never blocks log_metrics;
    # close() retries until its deadline, then says how many steps did not reach MLflow.
    with pytest.raises(mlflow.exceptions.MlflowException):
        MlflowLogger(run_id="0" * 32)
    logger = MlflowLogger(run.info.run_id, flush_timeout=2.0)
    store.delete_run(run.info.run_id)
    logger.log_metrics({"x": 1.0}, 9)
    with pytest.warns(UserWarning, match="1 steps could not be sent"):
        assert logger.close() is False
    assert logger.failed_sends >= 1


def test_artifacts_and_figure(store, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "eval.json").write_text("{}")
    (tmp_path / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with stage_run("evaluate", TrackingConfig()) as run:
        log_artifact_files([tmp_path / "reports", tmp_path / "params.yaml"])
        assert log_figure(tmp_path / "curves.png") == "plots/curves.png"
        with pytest.raises(FileNotFoundError, match="missing.json"):
            log_artifact_files([tmp_path / "missing.json"])
        with pytest.raises(FileNotFoundError, match="not an existing .png"):
            log_figure(tmp_path / "params.yaml")
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "dl"))
    files = sorted(str(p.relative_to(local)) for p in Path(local).rglob("*")
                   if p.is_file())
    assert files == ["params.yaml", "plots/curves.png", "reports/eval.json"]


# --------------------------------------------------------------------------- models


def test_choose_champion_best_metric_ties_to_newest():
    from pgrpo.tracking.mlflow_models import choose_champion

    assert choose_champion([(1, 0.5), (2, 0.7), (3, 0.6)]) == 2
    assert choose_champion([(3, 0.7), (2, 0.7), (1, 0.1)]) == 3
    assert choose_champion([("4", 0.7), ("10", 0.7)]) == "10"  # by number, not as text
    assert choose_champion([(1, None), (2, float("nan")), (3, -1.0)]) == 3
    with pytest.raises(ValueError, match="no candidate has a headline metric"):
        choose_champion([(1, None)])


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """(reward model folder, policy folder): tiny-random-bert reward model, tiny-random-llama."""
    from test_reward_model import preference_tables, tiny_cfg, write_tables

    from pgrpo.core.models import load_policy
    from pgrpo.stages.reward.train_reward import train_reward

    root = tmp_path_factory.mktemp("models")
    pairs, groups = preference_tables(n_train=8, n_eval=4, users_per_group=2)
    train_reward(tiny_cfg(), *write_tables(root, pairs, groups), root / "reward")
    model, tok = load_policy("tiny-random-llama")
    model.save_pretrained(root / "policy", safe_serialization=True)
    tok.save_pretrained(root / "policy")
    return root / "reward", root / "policy"


def test_models_logged_registered_champion_loads_and_predicts(store, tiny_models, tmp_path):
    from pgrpo.tracking.mlflow_models import (
        POLICY_NAME, REWARD_MODEL_NAME, log_policy, log_reward_model, pip_requirements,
        promote_best_policy,
    )
    from pgrpo.core.models import load_policy
    from pgrpo.stages.reward.reward_model import GroupRewardFn
    from pgrpo.core.rollout import chat_prompts

    reward_dir, policy_dir = tiny_models
    cfg = TrackingConfig()
    with pipeline_run(cfg) as parent:
        with stage_run("train_reward", cfg):
            rm_version = log_reward_model(reward_dir)
        policy_versions = {}
        for alg in ("pgrpo", "grpo"):
            with stage_run("train_policy", cfg, algorithm=alg) as run:
                policy_versions[alg] = log_policy(policy_dir, alg)
                assert policy_versions[alg].run_id == run.info.run_id
        with pytest.raises(FileNotFoundError, match="not a saved model folder"), stage_run("x", cfg):
            log_policy(tmp_path, "pgrpo")
        with stage_run("evaluate", cfg), pytest.warns(UserWarning, match=r"for \['absent'\]"):
            champion = promote_best_policy({"pgrpo": 0.7, "grpo": 0.5, "absent": 0.9}, "eval/reward")

    assert rm_version.name == REWARD_MODEL_NAME and str(rm_version.version) == "1"
    assert rm_version.tags["pgrpo.groups"] == "casual,formal" and rm_version.tags["pgrpo.parent_run_id"] == parent
    assert {str(v.version): v.tags["pgrpo.algorithm"] for v in policy_versions.values()} == {"1": "pgrpo", "2": "grpo"}
    assert str(champion.version) == "1"
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(POLICY_NAME, "champion").version) == "1"
    v2 = client.get_model_version(POLICY_NAME, "2")
    assert v2.tags["pgrpo.eval.eval/reward"] == "0.5" and "pgrpo.headline_metric" not in v2.tags

    # Stored as the stage's folder (safetensors) plus code and pinned requirements.
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{POLICY_NAME}@champion",
                                                     dst_path=str(tmp_path / "dl")))
    assert (local / "artifacts" / "policy" / "model.safetensors").is_file()
    assert (local / "code" / "pgrpo" / "tracking" / "mlflow_models.py").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert set(pip_requirements()) <= set(requirements) and "torch==2.13.0" in requirements
    assert not list(local.rglob("*.pkl")) and (local / "policy_model.py").is_file()

    # The champion policy: greedy completions equal to the folder's own greedy decoding.
    prompts = ["Any advice on tea?", "Tell me about jazz."]
    got = mlflow.pyfunc.load_model(f"models:/{POLICY_NAME}@champion").predict(
        pd.DataFrame({"prompt": prompts}), params={"max_new_tokens": 6})
    model, tok = load_policy(str(policy_dir))
    enc = tok(chat_prompts(tok, prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id)
    assert got == tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(got) == 2 and all(isinstance(c, str) for c in got)

    # The reward model scores as the reward function does, group by name.
    rm = mlflow.pyfunc.load_model(f"models:/{REWARD_MODEL_NAME}/1")
    frame = pd.DataFrame({"prompt": ["Any advice on tea?"] * 2, "response": ["tea 😍", "Regarding tea."],
                          "group": ["formal", "casual"]})
    expected = GroupRewardFn(reward_dir, ["casual", "formal"], device="cpu")(
        frame["prompt"].tolist(), frame["response"].tolist(), torch.tensor([1, 0]))
    torch.testing.assert_close(torch.as_tensor(rm.predict(frame)), expected)
    with pytest.raises(ValueError, match=r"\['pirates'\] are not in the reward model"):
        rm.predict(frame.assign(group="pirates"))


# --------------------------------------------------------------------------- a real dvc repro

STAGE_SCRIPT = """
import sys
from pathlib import Path
from pgrpo.tracking.mlflow_tracking import TrackingConfig, stage_run

name = sys.argv[1]
with stage_run(name, TrackingConfig(), {"stage": name}) as run:
    if name == "make":
        Path("data").mkdir(exist_ok=True)
        Path("data/v.txt").write_text(Path("params.yaml").read_text())
    else:
        Path("result.txt").write_text(Path("data/v.txt").read_text())
    with open("runs.log", "a") as f:
        f.write(f"{name} {run.info.run_id}\\n")
"""


def test_real_dvc_repro_one_parent_and_current_data_hashes(store, tmp_path):
    py = sys.executable
    (tmp_path / "stage.py").write_text(STAGE_SCRIPT)
    (tmp_path / "params.yaml").write_text("make:\n  x: 1\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "make": {"cmd": f"{py} stage.py make", "deps": ["stage.py"], "params": ["make.x"],
                 "outs": ["data"]},
        "use": {"cmd": f"{py} stage.py use", "deps": ["stage.py", "data"], "outs": ["result.txt"]},
    }}))
    (tmp_path / ".gitignore").write_text("mlflow.db\nmlruns/\nruns.log\n")
    git("init", "-q")
    subprocess.run([py, "-m", "dvc", "init", "-q"], check=True)
    git("add", "-A")
    git("commit", "-qm", "pipeline")

    subprocess.run([py, "-m", "dvc", "repro", "-q"], check=True, capture_output=True)
    runs = dict(line.split() for line in (tmp_path / "runs.log").read_text().splitlines())
    parent = parent_of(store, runs["make"])
    assert parent_of(store, runs["use"]) == parent  # two processes, one parent
    use = store.get_run(runs["use"]).data.tags
    assert use["dvc.stage"] == "use" and use["pgrpo.stage"] == "use"
    # `make` made DVC rewrite .gitignore and write dvc.lock before `use` ran: not "dirty".
    assert use["pgrpo.git_dirty"] == "false" and (tmp_path / "dvc.lock").is_file()
    # The parent holds the hash of every out dvc.lock had when the last stage started.
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    data_md5 = lock["stages"]["make"]["outs"][0]["md5"]
    assert data_md5.endswith(".dir") and store.get_run(parent).data.tags["dvc.data"] == data_md5
    assert store.get_run(parent).info.status == "FINISHED"
    # `use`, run for the first time, has the hash of the data `make` wrote just before.
    assert use["dvc.data"] == data_md5

    # When `use` runs again, its own lock entry holds the last run's hash of `data`; the tag
    # must be the hash `make` recorded when it reran just before (here: its out, made different).
    assert {d["path"]: d["md5"] for d in lock["stages"]["use"]["deps"]}["data"] == data_md5
    lock["stages"]["make"]["outs"][0]["md5"] = "0" * 32 + ".dir"
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert dvc_tags("use", tmp_path) == ({"dvc.data": "0" * 32 + ".dir"},
                                         {"dvc.data": "0" * 32 + ".dir", "dvc.result.txt": ANY})
    # A dependency inside a produced folder is pinned by the folder's hash; a .dvc file counts.
    pipeline = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    pipeline["stages"]["use"]["deps"] = ["stage.py", "data/v.txt", "raw.csv"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    (tmp_path / "raw.csv.dvc").write_text("outs:\n- md5: abc\n  path: raw.csv\n")
    assert dvc_tags("use", tmp_path)[0] == {"dvc.data": "0" * 32 + ".dir", "dvc.raw.csv": "abc"}
