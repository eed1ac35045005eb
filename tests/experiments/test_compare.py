"""The comparison over seeds (pgrpo.experiments.compare): its config, its folders, the mean
curves, and a real tiny run. Its statistics on hand-made runs: test_compare_summary.py.

    python -m pytest -q tests/experiments/test_compare.py

The end-to-end test trains tiny random models: its numbers mean nothing, it checks that
outputs exist and agree with the per-seed metrics.
"""

import json
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pgrpo.experiments.compare import CompareConfig, load_compare


def test_a_named_comparison_keeps_its_folders_apart():
    from pgrpo.experiments.compare import reports_root, run_tags, seed_dirs

    cfg = CompareConfig(name="claim_judge", seeds=[3])
    assert seed_dirs(3, cfg.name) == (Path("models/compare/claim_judge/seed3"),
                                      Path("reports/compare/claim_judge/seed3"))
    assert seed_dirs(3) == (Path("models/compare/seed3"), Path("reports/compare/seed3"))
    assert reports_root(cfg.name) == Path("reports/compare/claim_judge")
    assert run_tags(cfg, 3) == {"pgrpo.compare": "claim_judge", "pgrpo.seed": "3"}
    with pytest.raises(ValueError, match="name"):
        CompareConfig(name="../elsewhere")


def test_mean_curves_carry_the_judge_curve_where_the_runs_logged_it(tmp_path, monkeypatch):
    from pgrpo.experiments.compare import mean_curves, seed_dirs
    from pgrpo.stages.evaluation.curves import JUDGE_CURVE_KEY, curve_key

    monkeypatch.chdir(tmp_path)
    cfg = CompareConfig(seeds=[0, 1], algorithms={"grpo": {}, "pgrpo": {}}, name="c")
    for seed in (0, 1):
        for alg in ("grpo", "pgrpo"):
            rows = [{"step": step, "train/reward/maj": 0.1 * step + seed}
                    for step in range(1, 5)]
            if alg == "pgrpo":  # the judge at steps 0 and 4 (policy.judge_every: 4)
                rows = [{"step": 0, "judge/reward/maj": 0.5 + seed}, *rows]
                rows[-1]["judge/reward/maj"] = 0.9 + seed
            path = seed_dirs(seed, "c")[0] / alg / "metrics.jsonl"
            path.parent.mkdir(parents=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = mean_curves(cfg)
    assert curve_key(curves["grpo"]) != JUDGE_CURVE_KEY  # no judge curve: the batch reward
    assert curve_key(curves["pgrpo"]) == JUDGE_CURVE_KEY
    by_step = {r["step"]: r for r in curves["pgrpo"]}
    assert by_step[0] == {"step": 0, "judge/reward/maj": pytest.approx(1.0)}  # (0.5 + 1.5) / 2
    assert by_step[4]["judge/reward/maj"] == pytest.approx(1.4)
    assert by_step[4]["train/reward/maj"] == pytest.approx(0.9)  # (0.4 + 1.4) / 2


# --------------------------------------------------------------------------- config

def test_compare_config_defaults_and_errors(tmp_path):
    cfg = CompareConfig()
    assert cfg.seeds == [0, 1, 2] and list(cfg.algorithms) == ["grpo", "grpo_batch", "pgrpo",
                                                                 "pgrpo_random"]
    with pytest.raises(ValueError, match="unknown policy keys"):
        CompareConfig(algorithms={"grpo": {"advantage": "grpo", "lr_typo": 1}})
    with pytest.raises(ValueError, match="reference"):
        CompareConfig(algorithms={"pgrpo": {}})
    with pytest.raises(ValueError, match="seeds repeat"):
        CompareConfig(seeds=[1, 1])
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"compare": {"seeds": [4]}}))
    narrowed = load_compare(params, algorithms=["pgrpo"])
    assert narrowed.seeds == [4] and list(narrowed.algorithms) == ["grpo", "pgrpo"]
    with pytest.raises(ValueError, match="compare.algorithms"):
        load_compare(params, algorithms=["ppo"])
    params.write_text(yaml.safe_dump({"compare": {"seed": [4]}}))
    with pytest.raises(ValueError, match="section 'compare'"):
        load_compare(params)


# --------------------------------------------------------------------------- a real run

@pytest.fixture
def tiny_pipeline(tmp_path, monkeypatch):
    from test_flows import TINY

    from pgrpo.orchestration.pipeline import run_stage

    monkeypatch.chdir(tmp_path)
    params = {**TINY, "compare": {"seeds": [0, 1], "algorithms": {
        "grpo": {"advantage": "grpo"}, "pgrpo": {"advantage": "pgrpo"}}}}
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("prepare", "assign_groups", "train_reward"):
        run_stage(stage, "params.yaml")
    return tmp_path


def test_comparison_runs_every_seed_and_summarizes_what_they_measured(tiny_pipeline, capsys):
    from safetensors.torch import load_file

    from pgrpo.experiments.compare import COMPARE_REPORTS, OUTPUTS, main, seed_dirs

    assert main(["--params", "params.yaml"]) == 0
    for name in OUTPUTS:
        assert (COMPARE_REPORTS / name).stat().st_size > 0, name
    summary = json.loads((COMPARE_REPORTS / "summary.json").read_text())
    per_seed = [json.loads((seed_dirs(s)[1] / "metrics.json").read_text()) for s in (0, 1)]
    for g in summary["groups"]:
        got = summary["policies"]["pgrpo"]["groups"][g]["reward"]["mean"]
        want = sum(m["algorithms"]["pgrpo"]["groups"][g]["reward"] for m in per_seed) / 2
        assert got == pytest.approx(want)
    # each seed trained with its own policy seed, from an effective params file
    seed1 = yaml.safe_load((seed_dirs(1)[0] / "params.yaml").read_text())
    assert seed1["policy"]["seed"] == 1 and list(seed1["algorithms"]) == ["grpo", "pgrpo"]
    assert seed1["tracking"]["log_models"] is False
    w0, w1 = (load_file(seed_dirs(s)[0] / "pgrpo" / "model" / "model.safetensors") for s in (0, 1))
    assert any(not (w0[k] == w1[k]).all() for k in w0)
    # a rerun resumes: finished trainings are not redone
    log = seed_dirs(0)[0] / "grpo" / "metrics.jsonl"
    before = log.read_text()
    metrics = seed_dirs(0)[1] / "metrics.json"
    evaluated = metrics.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["--params", "params.yaml", "--seeds", "0"]) == 0
    assert log.read_text() == before
    # ... and neither is an evaluation of the same policies (re-exported byte-identical by
    # the resumed trainer), params, data and code
    assert metrics.stat().st_mtime_ns == evaluated
    assert "seed 0: reports/compare/seed0 already evaluates these policies" in capsys.readouterr().err
    # but an evaluation whose report was edited since, or under other params, is redone
    for change in ([], ["--set", "evaluate.n_boot=21"]):
        if not change:
            (seed_dirs(0)[1] / "report.md").write_text("edited by hand")
        assert main(["--params", "params.yaml", "--seeds", "0", *change]) == 0
        assert metrics.stat().st_mtime_ns != evaluated, change
        assert "not evaluated again" not in capsys.readouterr().err
        evaluated = metrics.stat().st_mtime_ns
    assert "edited by hand" not in (seed_dirs(0)[1] / "report.md").read_text()


def test_comparison_needs_the_shared_stages_first(tmp_path, monkeypatch, capsys):
    from pgrpo.experiments.compare import main

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"policy": {"steps": 1}}))
    assert main([]) == 1
    assert "dvc repro train_reward" in capsys.readouterr().err
    assert main(["--set", "polcy.steps=2"]) == 1
    assert "unknown section 'polcy'" in capsys.readouterr().err


@pytest.mark.slow  # ~60 s on 2 cores: ~30 s of it starting the temporary Prefect server
def test_compare_flow_runs_each_seed_and_algorithm_as_a_task(tiny_pipeline):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.compare import compare
    from flows.serve import deployments

    assert "params" in {d.name for d in deployments() if d.flow_name == "pgrpo-compare"}
    with prefect_test_harness(server_startup_timeout=None), temporary_settings(
            {PREFECT_LOCAL_STORAGE_PATH: tiny_pipeline / "results"}):
        state = compare(params_file="params.yaml", seeds=[0, 1], return_state=True)
        assert state.is_completed(), state.message
        flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        with get_client(sync_client=True) as client:
            runs = {r.name for r in client.read_task_runs(flow_run_filter=flow_run)}
            artifacts = {a.key for a in client.read_artifacts() if a.key}
    assert {"train-grpo-seed0", "train-pgrpo-seed1", "evaluate-seed0", "evaluate-seed1"} <= runs
    assert {"pgrpo-comparison", "pgrpo-comparison-claims"} <= artifacts
    assert (Path("reports/compare/report.md")).is_file()


@pytest.mark.slow  # ~2 min on 2 cores: the temporary Prefect server, a Dask cluster, 8 trainings
def test_compare_flow_on_a_local_dask_cluster_matches_the_sequential_run(tiny_pipeline):
    """dask_address='local': a Dask scheduler and two worker processes train and evaluate the
    seeds as Prefect tasks; every seed's evaluation equals the one-by-one run's, given the
    same torch threads per training (a Dask worker runs one thread)."""
    pytest.importorskip("prefect_dask")
    import shutil

    import torch
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.compare import compare
    from pgrpo.experiments.compare import main, seed_dirs

    def evaluations():
        out = {}
        for s in (0, 1):
            m = json.loads((seed_dirs(s)[1] / "metrics.json").read_text())
            out[s] = {k: v for k, v in m.items() if "time" not in k and "seconds" not in k}
        return out

    with prefect_test_harness(server_startup_timeout=None), temporary_settings(
            {PREFECT_LOCAL_STORAGE_PATH: tiny_pipeline / "results"}):
        state = compare(params_file="params.yaml", seeds=[0, 1], dask_address="local",
                        dask_workers=2, return_state=True)
        assert state.is_completed(), state.message
    on_dask = evaluations()
    shutil.rmtree("models/compare")
    shutil.rmtree("reports/compare")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["--params", "params.yaml"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert on_dask == evaluations()
