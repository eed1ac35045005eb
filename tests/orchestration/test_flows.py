"""Prefect tasks and the pgrpo-pipeline flow: task functions, cache keys, parameters, a real run.

    python -m pytest -q tests/orchestration/test_flows.py

The last test runs the whole flow once under a temporary Prefect server, with tiny
random models, in a temp git + DVC repo holding the project's dvc.yaml: every stage
is a task run, artifacts exist, MLflow has the runs, `dvc status` is clean.
"""

import os
from collections import Counter
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# (Prefect's home and start-up timeout, and no telemetry: tests/conftest.py, for every test.)

from pydantic import ValidationError

from pgrpo.core.config import merge_params, read_params
from flows.pipeline import PipelineParams, effective_params_file, pipeline
from pgrpo.orchestration import stage_key
from pgrpo.orchestration.stage_code import stage_code
from tasks import stages

TINY = merge_params(read_params(REPO / "params.yaml"), {
    "prepare": {"source": "synthetic", "n_personas": 3, "n_users": 30, "prompts_per_user": 2,
                "candidates_per_prompt": 4, "pairs_per_prompt": 2, "seed": 0},
    "assign_groups": {"method": "label", "seed": 0},
    "reward": {"encoder": "tiny-random-bert", "epochs": 1, "batch_size": 16, "max_length": 48,
               "device": "cpu", "seed": 0},
    "policy": {"model": "tiny-random-llama", "prompts": "data/processed/prompts.parquet",
               "groups": "data/processed/groups.parquet", "reward": "models/reward",
               "steps": 2, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 6,
               "micro_batch_size": 8, "lr": 1e-3, "checkpoint_every": 2, "precision": "fp32"},
    "algorithms": {"pgrpo": {"advantage": "pgrpo"}, "grpo": {"advantage": "grpo"}},
    "evaluate": {"prompts_per_group": 1, "samples_per_prompt": 2, "val_prompts_per_group": 1, "max_new_tokens": 6,
                 "n_boot": 20, "batch_size": 16, "device": "cpu"},
    "tracking": {"enabled": False},
})


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", TINY)
    return tmp_path


# --------------------------------------------------------------------------- tasks, unrun

def test_prepare_and_assign_task_functions_write_outputs_and_summaries(tiny_repo):
    metrics = stages.prepare.fn("params.yaml")
    assert metrics["rows"]["users"]["total"] == 30
    assert all(p.is_file() for p in stages.stage_outputs("prepare", "params.yaml"))
    md = stages.summarize("prepare", metrics)
    assert all(f"| {g} |" in md for g in metrics["users_per_group"])

    groups = stages.assign_groups.fn("params.yaml")
    assert sum(groups["sizes"].values()) == 30
    md = stages.summarize("assign_groups", groups)
    assert all(f"| {g} | {n} |" in md for g, n in groups["sizes"].items())


def test_cache_key_follows_params_and_input_content_only(tiny_repo):
    def key():
        return stages.stage_cache_key("assign_groups", "params.yaml")

    assert stages.outputs_missing("assign_groups", "params.yaml")  # the flow refreshes the cache
    stages.prepare.fn("params.yaml")
    stages.assign_groups.fn("params.yaml")
    assert not stages.outputs_missing("assign_groups", "params.yaml")
    k0 = key()
    assert k0 and key() == k0

    users = Path("data/processed/users.parquet")
    os.utime(users, ns=(users.stat().st_atime_ns, users.stat().st_mtime_ns + 10**9))
    write_params(Path("params.yaml"), {**TINY, "reward": {**TINY["reward"], "epochs": 3}})
    assert key() == k0  # touched input, another stage's params: same key

    write_params(Path("params.yaml"), {**TINY, "assign_groups": {"method": "label", "seed": 1}})
    assert key() != k0
    write_params(Path("params.yaml"), TINY)
    assert key() == k0

    import pandas as pd
    pd.read_parquet(users).iloc[:-1].to_parquet(users, index=False)
    assert key() != k0  # input content changed

    Path("data/processed/groups.parquet").unlink()
    assert stages.outputs_missing("assign_groups", "params.yaml")


def test_cached_result_is_usable_only_while_the_outputs_are_the_ones_it_left(tiny_repo):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    def usable():
        return stages.cache_usable("assign_groups", "params.yaml")

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tiny_repo / "results"}):
        assert not usable()  # no outputs
        stages.prepare.fn("params.yaml")
        stages.assign_groups.fn("params.yaml")
        assert not usable()  # outputs, but no cached run recorded them
        stages.record_outputs("assign_groups", "params.yaml")
        assert usable()
        groups = Path("data/processed/groups.parquet")
        import pandas as pd
        pd.read_parquet(groups).iloc[:-1].to_parquet(groups, index=False)  # e.g. dvc repro
        assert not usable()
        stages.record_outputs("assign_groups", "params.yaml")
        assert usable()
        groups.unlink()
        assert not usable()


def test_cache_key_follows_the_code_each_stage_runs(tiny_repo, tmp_path, monkeypatch):
    """An edited module changes the key of every stage that runs it, and only theirs: the
    flow runs those stages again instead of serving (and DVC-committing) stale results."""
    code = tmp_path / "code"
    shutil.copytree(REPO / "pgrpo", code / "pgrpo", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(stage_key, "CODE_ROOT", code)
    before = {s: stages.stage_cache_key(s, "params.yaml") for s in ("prepare", "assign_groups")}
    with (code / "pgrpo" / "stages" / "groups" / "bt_mixture.py").open("a") as f:
        f.write("\n# an edit\n")
    assert stages.stage_cache_key("assign_groups", "params.yaml") != before["assign_groups"]
    assert stages.stage_cache_key("prepare", "params.yaml") == before["prepare"]


def test_train_policy_cache_key_depends_on_its_algorithm_entry(tiny_repo):
    Path("models/reward").mkdir(parents=True)  # an input: hashed by content
    (Path("models/reward") / "config.json").write_text("{}")
    k = {a: stages.stage_cache_key("train_policy", "params.yaml", a) for a in ("pgrpo", "grpo")}
    assert k["pgrpo"] != k["grpo"]
    algs = {**TINY["algorithms"], "grpo": {"advantage": "grpo", "scale": "batch"}}
    write_params(Path("params.yaml"), {**TINY, "algorithms": algs})
    assert stages.stage_cache_key("train_policy", "params.yaml", "pgrpo") == k["pgrpo"]
    assert stages.stage_cache_key("train_policy", "params.yaml", "grpo") != k["grpo"]
    (Path("models/reward") / "config.json").write_text('{"changed": 1}')
    assert stages.stage_cache_key("train_policy", "params.yaml", "pgrpo") != k["pgrpo"]


# --------------------------------------------------------------------------- flow parameters

@pytest.mark.parametrize("bad, field", [({"steps": 0}, "steps"), ({"lr": -1e-3}, "lr"),
                                        ({"group_method": "kmeans"}, "group_method"),
                                        ({"seed": -1}, "seed"), ({"algorithms": []}, "algorithms"),
                                        ({"stepz": 3}, "stepz")])
def test_flow_parameters_reject_bad_values_naming_the_field(bad, field):
    with pytest.raises(ValidationError, match=field):
        PipelineParams(**bad)
    if field != "stepz":  # Prefect validates the flow call with the same definitions
        from prefect.exceptions import ParameterTypeError
        with pytest.raises(ParameterTypeError, match=field):
            pipeline.validate_parameters(bad)


def test_flow_parameters_are_documented_for_the_ui_form():
    from prefect.utilities.callables import parameter_schema

    props = parameter_schema(pipeline.fn).model_dump()["properties"]
    assert set(props) == set(PipelineParams.model_fields)
    assert all(p.get("description") for p in props.values())


def test_overrides_go_to_an_effective_params_file_never_to_params_yaml(tiny_repo):
    assert effective_params_file(PipelineParams()) == ("params.yaml", False)
    same = PipelineParams(steps=TINY["policy"]["steps"], algorithms=["pgrpo", "grpo"])
    assert effective_params_file(same) == ("params.yaml", False)  # equal values: no override

    path, overridden = effective_params_file(PipelineParams(
        steps=1, lr=0.01, seed=7, group_method="random", algorithms=["grpo"]))
    try:
        assert overridden and Path(path).resolve() != Path("params.yaml").resolve()
        eff = yaml.safe_load(Path(path).read_text())
        assert (eff["policy"]["steps"], eff["policy"]["lr"]) == (1, 0.01)
        assert eff["assign_groups"]["method"] == "random" and list(eff["algorithms"]) == ["grpo"]
        assert all(eff[s]["seed"] == 7 for s in ("prepare", "assign_groups", "reward", "policy"))
        assert eff["evaluate"] == TINY["evaluate"]
    finally:
        Path(path).unlink()
    assert yaml.safe_load(Path("params.yaml").read_text()) == TINY

    # Any other param through `overrides` (the CLI's --set), after the knobs.
    eff = PipelineParams(steps=3, overrides=["policy.beta=4e-2", "policy.steps=5",
                                             "algorithms.grpo.scale=batch"]).effective()
    assert (eff["policy"]["beta"], eff["policy"]["steps"]) == (0.04, 5)
    assert eff["algorithms"]["grpo"] == {"advantage": "grpo", "scale": "batch"}
    with pytest.raises(ValueError, match="unknown section 'polcy'"):
        PipelineParams(overrides=["polcy.lr=1"]).effective()
    with pytest.raises(ValueError, match="expected SECTION.KEY=VALUE"):
        PipelineParams(overrides=["lr=1"]).effective()
    with pytest.raises(ValueError, match=r"\['dpo'\].*listed: \['grpo', 'pgrpo'\]"):
        PipelineParams(algorithms=["dpo"]).effective()
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        PipelineParams(params_file="nope.yaml").effective()


def test_any_registered_estimator_is_selectable_from_the_form(tiny_repo):
    eff = PipelineParams(estimators=["pgrpo_scale", "grpo"]).effective()
    assert eff["algorithms"] == {"pgrpo_scale": {"advantage": "pgrpo_scale"},
                                 "grpo": {"advantage": "grpo"}}
    check_params_file = effective_params_file(PipelineParams(estimators=["pgrpo_scale"]))[0]
    try:  # the stages accept it as they would from params.yaml
        from flows.pipeline import check_params
        assert check_params(check_params_file) == ["pgrpo_scale"]
    finally:
        Path(check_params_file).unlink()
    with pytest.raises(ValueError, match=r"\['ppo'\] are not registered; registered: .*pgrpo"):
        PipelineParams(estimators=["ppo"]).effective()
    with pytest.raises(ValueError, match="not both"):
        PipelineParams(estimators=["grpo"], algorithms=["grpo"]).effective()


# --------------------------------------------------------------------------- a real flow run

def _dvc(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def test_retries_only_errors_a_second_try_can_fix():
    from prefect.states import Failed

    assert stages.retry_if_transient(None, None, Failed(data=RuntimeError("CUDA out of memory")))
    assert stages.retry_if_transient(None, None, Failed(data=OSError("database is locked")))
    for exc in (ValueError("params.yaml, section 'policy': lr"), FileNotFoundError("x.parquet")):
        assert not stages.retry_if_transient(None, None, Failed(data=exc))


# ~80 s on 2 cores, ~30 s of it starting the temporary Prefect server: the one real flow
# run CI makes (the comparison flow's test is marked slow).
def test_flow_runs_every_stage_as_a_task_and_leaves_dvc_up_to_date(tmp_path, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # A DVC repo with the project's dvc.yaml (and the code it names as deps).
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(REPO / "pgrpo", tmp_path / "pgrpo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data" / "raw", tmp_path / "data" / "raw")  # prepare's DVC dep
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc("init", "-q", cwd=tmp_path)
    db = tmp_path / "mlflow.db"
    write_params(tmp_path / "params.yaml", {**TINY, "tracking": {
        "enabled": True, "tracking_uri": f"sqlite:///{db}", "experiment": "flow-test",
        "log_models": False, "register_models": False}})
    monkeypatch.chdir(tmp_path)

    with prefect_test_harness(server_startup_timeout=None), \
            temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}):
        def task_runs(state):
            assert state.is_completed(), state.message
            flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            with get_client(sync_client=True) as client:
                return client.read_task_runs(flow_run_filter=flow_run)

        runs = task_runs(pipeline(params_file="params.yaml", return_state=True))
        with get_client(sync_client=True) as client:
            artifacts = {a.key: a for a in client.read_artifacts() if a.key}
        # Same params and inputs, knobs equal to the file's: every stage comes from the cache.
        again = task_runs(pipeline(params_file="params.yaml", algorithms=["pgrpo", "grpo"],
                                   return_state=True))
        # An edit to the judge (a module evaluate and the training stages run; the copy here
        # is the one DVC hashes, identical to the code that runs until edited): those stages
        # run again, the others stay cached, and DVC records the truth.
        monkeypatch.setattr(stage_key, "CODE_ROOT", tmp_path)
        with (tmp_path / "pgrpo" / "stages" / "evaluation" / "judge.py").open("a") as f:
            f.write("\n# an edit\n")
        assert "evaluate" in _dvc("status", cwd=tmp_path)
        edited = task_runs(pipeline(params_file="params.yaml", return_state=True))
    names = sorted(r.name for r in runs)
    assert {n.rsplit("-", 1)[0] for n in names} >= set(stages.STAGES), names
    assert {"train_policy-pgrpo", "train_policy-grpo"} <= set(names)
    assert all(r.state.is_completed() for r in runs)
    assert {"pgrpo-prepare", "pgrpo-assign-groups", "pgrpo-train-reward",
            "pgrpo-train-policy-pgrpo", "pgrpo-evaluate", "pgrpo-group-rewards",
            "pgrpo-flow-params"} <= set(artifacts), sorted(artifacts)
    assert artifacts["pgrpo-train-policy-grpo-progress"].data == 100.0
    assert "| pgrpo |" in str(artifacts["pgrpo-evaluate"].data)  # the report, one column each
    assert len(again) == len(runs) and all(r.state.name == "Cached" for r in again)

    rerun = {r.name.split("-")[0] for r in edited if r.state.name != "Cached"}
    assert rerun == {s for s in stages.STAGES if Path("pgrpo/stages/evaluation/judge.py") in stage_code(s)}, rerun
    assert {"prepare", "evaluate"} <= {r.name.split("-")[0] for r in edited} and "prepare" not in rerun
    assert "up to date" in _dvc("status", cwd=tmp_path)  # the two front doors agree

    import mlflow
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("flow-test")
    children = client.search_runs([exp.experiment_id], "tags.`pgrpo.stage` != ''")
    per_parent = Counter(c.data.tags["mlflow.parentRunId"] for c in children)
    assert sorted(per_parent.values()) == [len(rerun) + 1, 6]  # the edit's run: + train_policy@grpo
