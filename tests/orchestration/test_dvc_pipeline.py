"""The DVC pipeline end to end: real `dvc repro` of configs/smoke.yaml in a temp git repo,
tracked in a real MLflow SQLite store; plus run_stage's errors (fast).

    python -m pytest -q tests/orchestration/test_dvc_pipeline.py            # incl. the smoke repro (~2.5 min, 2 cores)
    python -m pytest -q -m slow tests/orchestration/test_dvc_pipeline.py    # the comparison over DVC experiments
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pgrpo import NO_TELEMETRY
from pgrpo.core.config import main as config_main, read_params, write_params
from pgrpo.orchestration.pipeline import STAGES, main, run_stage

REPO = Path(__file__).resolve().parents[2]
ALGORITHMS = ["pgrpo", "grpo"]
CHILD_RUNS = {"prepare", "assign_groups", "train_reward", "train_policy-pgrpo",
              "train_policy-grpo", "evaluate"}


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **NO_TELEMETRY,
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    env.pop("PGRPO_PARENT_RUN_ID", None)  # the DVC parent, not a driver's
    env.pop("DVC_STAGE", None)
    return env


def _run(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       check=False)
    assert p.returncode == 0, f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout + p.stderr


def _smoke_repo(root: Path, params: dict | None = None) -> tuple[Path, dict]:
    """A git repo with the project's code, dvc.yaml, DVC set-up and the smoke params (or
    `params`)."""
    repo = root / "repo"
    repo.mkdir()
    shutil.copytree(REPO / "pgrpo", repo / "pgrpo",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "configs", repo / "configs")
    for name in ["dvc.yaml", ".dvcignore", ".gitignore"]:  # .gitignore: what experiments commit
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / "data" / "raw", repo / "data" / "raw")  # prepare's DVC dep
    env = _env(root)
    _run(["git", "init", "-q"], repo, env)
    _run(["dvc", "init", "-q"], repo, env)
    shutil.copytree(REPO / ".dvc" / "plots", repo / ".dvc" / "plots")
    write_params(params or read_params(REPO / "configs" / "smoke.yaml"), repo / "params.yaml")
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "smoke"], repo, env)
    return repo, env


# --------------------------------------------------------------------------- fast

def test_run_stage_rejects_unknown_stage_and_algorithm(tmp_path):
    params = tmp_path / "params.yaml"
    write_params(read_params(REPO / "configs" / "smoke.yaml"), params)
    with pytest.raises(ValueError, match=r"unknown stage 'train'.*prepare, assign_groups"):
        run_stage("train", params)
    with pytest.raises(ValueError, match=r"algorithm 'ppo' is not under `algorithms`.*'grpo'"):
        run_stage("train_policy", params, algorithm="ppo")
    with pytest.raises(ValueError, match="train_policy needs an algorithm"):
        run_stage("train_policy", params)
    with pytest.raises(ValueError, match="applies to train_policy only"):
        run_stage("evaluate", params, algorithm="pgrpo")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        run_stage("prepare", tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="only train_policy logs per step, not 'prepare'"):
        run_stage("prepare", params, loggers=[object()])
    with pytest.raises(ValueError, match="not folders 'prepare' writes to"):
        run_stage("prepare", params, policy_root=tmp_path / "p")
    with pytest.raises(ValueError, match="not folders 'train_policy' writes to"):
        run_stage("train_policy", params, algorithm="grpo", reports_dir=tmp_path / "r")
    assert not (tmp_path / "mlflow.db").exists()  # nothing was tracked for a refused stage


def test_cli_reports_errors(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    write_params(read_params(REPO / "configs" / "smoke.yaml"), params)
    assert main(["train_policy", "--algorithm", "ppo", "--params", str(params)]) == 1
    assert "algorithm 'ppo' is not under `algorithms`" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not a stage
        main(["bogus"])
    # --set: a misspelt key is named, with every other problem, before anything runs
    assert main(["prepare", "--params", str(params), "--set", "prepare.n_user=5",
                 "--set", "policy.lr=-1"]) == 1
    err = capsys.readouterr().err
    assert f"error: {params} with --set prepare.n_user=5 policy.lr=-1:" in err, err
    assert "n_user" in err and "Extra inputs" in err and "greater than 0" in err
    assert main(["prepare", "--params", str(params), "--set", "prepar.seed=1"]) == 1
    assert "unknown section 'prepar'" in capsys.readouterr().err


# every pipeline preset (the mechanism experiment's configs are another experiment's)
PRESETS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").glob("*.yaml")
                 if not p.name.startswith("mechanism"))


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_presets_resolve_to_complete_params_files():
    from pgrpo.core.config import load_section, policy_config
    from pgrpo.stages.evaluation.eval_config import EvalConfig
    from pgrpo.stages.groups.assign_groups import AssignConfig
    from pgrpo.tracking.mlflow_tracking import TrackingConfig
    from pgrpo.stages.data.prepare import PrepareConfig
    from pgrpo.stages.reward.train_reward import RewardConfig

    from pgrpo.experiments.compare import load_compare

    base = read_params(REPO / "params.yaml")
    for f in ["params.yaml", *PRESETS]:
        path = REPO / f
        params = read_params(path)
        assert set(params) == set(base), f
        # DVC fails a stage whose listed param is missing: every key dvc.yaml names is there
        for stage, spec in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
            spec = spec.get("do", spec)
            for key in spec.get("params", []):
                node = params
                for part in key.replace("${key}", "pgrpo").split("."):
                    assert part in node, f"{f}: {stage} lists param {key}, missing"
                    node = node[part]
        load_compare(path)
        for section, schema in [("prepare", PrepareConfig), ("assign_groups", AssignConfig),
                                ("reward", RewardConfig), ("evaluate", EvalConfig),
                                ("tracking", TrackingConfig)]:
            load_section(path, section, schema)
        for alg in params["algorithms"]:
            cfg = policy_config(path, alg)
            assert cfg.reward in ("models/reward", "judge"), (f, cfg.reward)
            assert cfg.groups == "data/processed/groups.parquet"


def test_presets_list_only_their_differences():
    for f in PRESETS:
        overlay = yaml.safe_load((REPO / f).read_text())
        parent = (REPO / f).parent / overlay.pop("extends")
        base = dict(_leaves(read_params(parent)))
        same = [k for k, v in _leaves(overlay) if k in base and base[k] == v]
        assert not same, f"{f} repeats {parent.name}'s values: {same}"


# What params.yaml changes for the pipeline: the standalone trainer's defaults are the
# embedded task (builtin prompts, the length reward), the pipeline's are its stages' outputs.
PIPELINE_WIRING = {"policy.prompts", "policy.groups", "policy.reward"}


def test_params_yaml_states_the_class_defaults_except_the_pipeline_wiring():
    """One home for each default: the config classes. params.yaml writes every field out (so
    `dvc params diff` and the comments show them) but may not disagree with a class default."""
    from pydantic_core import PydanticUndefined

    from pgrpo.experiments.compare import CompareConfig
    from pgrpo.core.config import PolicyConfig
    from pgrpo.stages.evaluation.eval_config import EvalConfig
    from pgrpo.stages.groups.assign_groups import AssignConfig
    from pgrpo.tracking.mlflow_tracking import TrackingConfig
    from pgrpo.stages.data.prepare import PrepareConfig
    from pgrpo.stages.reward.train_reward import RewardConfig

    params = read_params(REPO / "params.yaml")
    differ = []
    for section, cls in [("prepare", PrepareConfig), ("assign_groups", AssignConfig),
                         ("reward", RewardConfig), ("policy", PolicyConfig),
                         ("evaluate", EvalConfig), ("tracking", TrackingConfig),
                         ("compare", CompareConfig)]:
        for key, value in params[section].items():
            default = cls.model_fields[key].default
            if default is PydanticUndefined or f"{section}.{key}" in PIPELINE_WIRING:
                continue
            if (tuple(value) if isinstance(value, list) else value) != \
                    (tuple(default) if isinstance(default, list) else default):
                differ.append(f"{section}.{key}: params.yaml {value!r}, class {default!r}")
    assert not differ, "\n".join(differ)


def test_train_help_shows_what_a_run_uses(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps help text at the terminal width
    with pytest.raises(SystemExit):
        from pgrpo.train import main as train_main
        train_main(["--params", str(REPO / "configs" / "smoke.yaml"), "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 'tiny-random-llama', from" in out and "smoke.yaml)" in out


def test_overlay_errors_name_the_problem(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("policy: {lr: 1.0, steps: 2}\nalgorithms: {a: {}}\n")
    (tmp_path / "typo.yaml").write_text("extends: base.yaml\npolcy: {lr: 2.0}\n")
    with pytest.raises(ValueError, match=r"typo.yaml: unknown section 'polcy'"):
        read_params(tmp_path / "typo.yaml")
    (tmp_path / "ok.yaml").write_text("extends: base.yaml\npolicy: {lr: 2.0}\n")
    assert read_params(tmp_path / "ok.yaml") == {"policy": {"lr": 2.0, "steps": 2},
                                                 "algorithms": {"a": {}}}
    (tmp_path / "self.yaml").write_text("extends: self.yaml\n")
    with pytest.raises(ValueError, match="names the file itself"):
        read_params(tmp_path / "self.yaml")
    assert config_main([str(tmp_path / "typo.yaml"), "--write", str(tmp_path / "p.yaml")]) == 1
    assert "unknown section 'polcy'" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()  # nothing half-written
    assert config_main([str(tmp_path / "ok.yaml"), "--write", str(tmp_path / "p.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "p.yaml").read_text())["policy"]["lr"] == 2.0


def test_dvc_yaml_builds_a_graph(tmp_path):
    """dvc.yaml parses, outputs do not overlap, and every stage is pending in a fresh repo."""
    repo, env = _smoke_repo(tmp_path)
    status = _run(["dvc", "status", "--json"], repo, env)
    pending = set(json.loads(status[status.index("{"):]))
    assert pending == {"prepare", "assign_groups", "train_reward", "train_policy@pgrpo",
                       "train_policy@grpo", "evaluate"}
    dag = _run(["dvc", "dag", "--outs"], repo, env)
    assert "models/policy/grpo" in dag and "reports/metrics.json" in dag
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert {s.split("@")[0] for s in pending} <= set(STAGES) and set(stages) == set(STAGES)


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def smoke_repro(tmp_path_factory):
    """`dvc repro` of the smoke params in a fresh repo, once for the tests below."""
    root = tmp_path_factory.mktemp("smoke")
    repo, env = _smoke_repo(root)
    return repo, env, _run(["dvc", "repro"], repo, env)


# ~2.5 min on 2 CPU cores (six stage processes each load torch + mlflow): the main job's
# front door, so it runs in CI.
def test_dvc_repro_smoke_end_to_end(smoke_repro):
    import mlflow
    import pandas as pd

    repo, env, out = smoke_repro
    assert out.count("Running stage") == 6, out

    again = _run(["dvc", "repro"], repo, env)
    assert "Running stage" not in again and "up to date" in again, again

    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    groups = sorted(pd.read_parquet(repo / "data/processed/groups.parquet")["group"].unique())
    assert len(groups) >= 2
    for alg in ALGORITHMS:
        by_group = metrics["algorithms"][alg]["groups"]
        assert sorted(by_group) == groups
        for g in groups:
            assert isinstance(by_group[g]["reward"], float), (alg, g, by_group[g])

    shown = _run(["dvc", "metrics", "show", "--json"], repo, env)
    assert "reports/metrics.json" in shown and "models/reward/metrics.json" in shown

    # MLflow: one DVC parent run, a child per stage, per-group step metrics, the registry.
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("pgrpo-smoke")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pgrpo.parent") == "dvc"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0].info.run_id
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent}
    assert set(children) == CHILD_RUNS
    assert all(r.info.status == "FINISHED" for r in runs)
    for alg in ALGORITHMS:
        run = children[f"train_policy-{alg}"]
        per_group = [k for k in run.data.metrics if k.startswith("train/reward/")]
        assert per_group and {k.split("/")[-1] for k in per_group} <= set(groups), per_group
        steps = [m.step for m in client.get_metric_history(run.info.run_id, per_group[0])]
        assert steps and set(steps) <= {1, 2}
        # the same curves on the pipeline run, where MLflow's chart view opens
        for name in per_group:
            copy = name.replace("train/", f"train/{alg}/", 1)
            assert [(m.step, m.value) for m in client.get_metric_history(parent, copy)] == [
                (m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        assert "plots/group_rewards.png" in [
            a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    logged = children["evaluate"].data.metrics  # the numbers of metrics.json, to the digit
    for alg in ALGORITHMS:
        assert logged[f"eval/algorithms/{alg}/mean_reward"] == pytest.approx(
            metrics["algorithms"][alg]["mean_reward"])
        for g in groups:
            assert logged[f"eval/algorithms/{alg}/groups/{g}/reward"] == pytest.approx(
                metrics["algorithms"][alg]["groups"][g]["reward"])

    assert client.search_model_versions("name = 'pgrpo-reward-model'")
    champion = client.get_model_version_by_alias("pgrpo-policy", "champion")
    best = max(metrics["algorithms"][a]["mean_reward"] for a in ALGORITHMS)
    assert metrics["algorithms"][champion.tags["pgrpo.algorithm"]]["mean_reward"] == best
    assert champion.tags["pgrpo.parent_run_id"] == parent


def test_a_dvc_remote_gives_a_fresh_clone_every_output_without_a_rerun(smoke_repro, tmp_path,
                                                                       sshd):
    """`dvc push` to a local-folder remote and to a real SSH remote (sshd on localhost,
    dvc-ssh); a fresh git clone pulls from either, and `dvc status` is clean: no stage to
    recompute, every cached output byte-identical to the one that was pushed."""
    import hashlib

    repo, env, _ = smoke_repro
    remotes = {"team": str(tmp_path / "remote"),
               "ssh": f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}{tmp_path / 'ssh_remote'}"}
    _run(["dvc", "remote", "add", "-d", "team", remotes["team"]], repo, env)
    _run(["dvc", "remote", "add", "ssh", remotes["ssh"]], repo, env)
    keyfile = ["dvc", "remote", "modify", "--local", "ssh", "keyfile", str(sshd["key"])]
    _run(keyfile, repo, env)  # a user's own key: .dvc/config.local, never committed
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "outputs and the team's remotes"], repo, env)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    cached = sorted({o["path"] for st in lock.values() for o in st.get("outs", [])})
    assert "models/reward" in cached and "models/policy/pgrpo/model" in cached

    def digest(root: Path) -> dict[str, str]:
        """sha256 of every file of every cached output, by path."""
        files = [f for out in cached for f in ([root / out] if (root / out).is_file()
                                               else sorted((root / out).rglob("*")))]
        return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
                for f in files if f.is_file()}

    pushed = digest(repo)
    for name in remotes:
        assert "pushed" in _run(["dvc", "push", "-r", name], repo, env), name
        clone = tmp_path / f"clone_{name}"
        _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
        if name == "ssh":
            _run(keyfile, clone, env)
        _run(["dvc", "pull", "-r", name], clone, env)
        status = subprocess.run(["dvc", "status", "--json"], cwd=clone, env=env, check=True,
                                capture_output=True, text=True).stdout
        assert json.loads(status) == {}, (name, status)
        assert "Running stage" not in _run(["dvc", "repro", "--dry"], clone, env), name
        assert digest(clone) == pushed, name


@pytest.mark.slow  # ~2 min more on 2 CPU cores: two experiments of 3 algorithms each
def test_comparison_over_dvc_experiments(smoke_repro):
    """The comparison's DVC route as docs/comparison.md gives it: a
    queued experiment per seed, an algorithm added with -S, `dvc queue start`, then
    pgrpo.experiments.compare summarizing their metrics, which DVC reads from the experiments' commits
    (a metrics file git ignores would be missing there)."""
    import time

    repo, env, _ = smoke_repro
    for seed in (1, 2):
        _run(["dvc", "exp", "run", "--queue", "-n", f"seed{seed}", "-S", f"policy.seed={seed}",
              "-S", "++algorithms.pgrpo_random.advantage=pgrpo",
              "-S", "++algorithms.pgrpo_random.advantage_groups=random"], repo, env)
    # The worker outlives `dvc queue start`: no pipes to it, then poll the queue.
    subprocess.run(["dvc", "queue", "start"], cwd=repo, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1200
    while any(w in (status := _run(["dvc", "queue", "status"], repo, env)) for w in ("Queued", "Running")):
        assert time.monotonic() < deadline, status
        time.sleep(5)
    assert status.count("Success") == 2, status
    _run([sys.executable, "-m", "pgrpo.experiments.compare", "--from-dvc-exps", "seed1,seed2",
          "--algorithms", "pgrpo,pgrpo_random"], repo, env)
    summary = json.loads((repo / "reports" / "compare" / "summary.json").read_text())
    assert summary["runs"] == ["seed1", "seed2"]
    assert set(summary["policies"]) == {"base", "pgrpo", "grpo", "pgrpo_random"}
    assert any(c["difference"] == "pgrpo - pgrpo_random" for c in summary["claims"])
