"""The comparison over seeds: t-intervals, paired differences, claims, and a real tiny run.

    python -m pytest -q tests/experiments/test_compare.py

Expected values are computed by hand here (t quantiles from tables), not by the code
under test. The end-to-end test trains tiny random models: its numbers mean nothing,
it checks that outputs exist and agree with the per-seed metrics.
"""

import json
import math
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pgrpo.experiments.compare import CompareConfig, load_compare
from pgrpo.experiments.compare_summary import (
    NOT_JUDGED,
    gains_over_base,
    render_comparison,
    summarize_runs,
    verdict,
)
from pgrpo.stages.evaluation.metrics import t_interval

T_975_DF2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (tables)
T_975_DF1 = 12.706204736174704


def test_t_interval_matches_the_textbook_formula():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0], 0.95)  # sd 1, n 3
    half = T_975_DF2 / math.sqrt(3)
    assert mean == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    mean, lo, hi = t_interval([0.0, 1.0], 0.95)  # sd sqrt(0.5), n 2
    assert (lo, hi) == pytest.approx((0.5 - T_975_DF1 * 0.5, 0.5 + T_975_DF1 * 0.5))


def test_t_interval_single_value_empty_and_nan():
    mean, lo, hi = t_interval([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in t_interval([]))
    with pytest.raises(ValueError, match="1 of 2 values are NaN"):
        t_interval([1.0, float("nan")])


# --------------------------------------------------------------------------- summary

SIZES = {"maj": 10, "min1": 3, "min2": 2}


def _policy(rewards: dict, auc: float | None = 0.5, loglik: float = 0.0) -> dict:
    means = list(rewards.values())
    return {"groups": {g: {"reward": r, "win_rate": 0.5, "steps_to_90": 3, "auc": auc}
                       for g, r in rewards.items()},
            "mean_reward": sum(means) / len(means), "worst_group_reward": min(means),
            "minority_majority_gap": None, "win_rate": 0.5, "kl_to_base": 0.01,
            "neutral_loglik_delta": loglik}


def _run(grpo: dict, pgrpo: dict, random: dict, eval_seed: int = 123) -> dict:
    return {"judge": "persona_utility", "groups": dict(SIZES), "majority_group": "maj",
            "settings": {"seed": eval_seed, "steps_key": "steps_to_90", "smooth_window": 3},
            "base": _policy({"maj": 0.0, "min1": 0.0, "min2": 0.0}, None),
            "algorithms": {"grpo": _policy(grpo), "pgrpo": _policy(pgrpo),
                           "pgrpo_random": _policy(random)}}


def _runs(minority_gains: list[float]) -> dict:
    """pgrpo = grpo + gain in both minority groups, equal in the majority."""
    out = {}
    for k, d in enumerate(minority_gains):
        g = {"maj": 0.5 + 0.1 * k, "min1": 0.2, "min2": 0.1 + 0.05 * k}
        p = {"maj": g["maj"], "min1": g["min1"] + d, "min2": g["min2"] + d}
        out[f"seed{k}"] = _run(g, p, g)
    return out


def test_paired_differences_and_interval_by_hand():
    s = summarize_runs(_runs([0.1, 0.2, 0.3]))
    # minority mean difference per run = gain; mean 0.2, sd 0.1
    claim = next(c for c in s["claims"] if c["metric"] == "minority_reward")
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert claim["mean"] == pytest.approx(0.2)
    assert (claim["ci_low"], claim["ci_high"]) == pytest.approx((0.2 - half, 0.2 + half))
    assert claim["verdict"] == "not resolved"  # 0.2 - 0.248 < 0
    # 4 seeds would do if mean and sd held: t(3) * 0.1 / 2 = 0.159 < 0.2
    assert claim["seeds_to_resolve"] == 4
    # mean over 3 groups moves by 2/3 of the gain
    mean_claim = next(c for c in s["claims"] if c["metric"] == "mean_reward"
                      and c["difference"] == "pgrpo - grpo")
    assert mean_claim["mean"] == pytest.approx(0.2 * 2 / 3)
    per_group = s["differences"]["pgrpo - grpo"]["groups"]
    assert per_group["maj"]["mean"] == pytest.approx(0.0)
    assert per_group["min2"]["mean"] == pytest.approx(0.2)
    # policies: majority reward per run 0.5, 0.6, 0.7 -> mean 0.6
    assert s["policies"]["grpo"]["majority_reward"]["mean"] == pytest.approx(0.6)
    assert s["policies"]["grpo"]["groups"]["maj"]["per_run"] == pytest.approx([0.5, 0.6, 0.7])
    assert list(s["groups"]) == ["maj", "min1", "min2"]  # the majority first


def test_verdicts_follow_the_interval():
    assert summarize_runs(_runs([0.2, 0.21, 0.19]))["claims"][1]["verdict"] == "supported"
    assert summarize_runs(_runs([-0.2, -0.21, -0.19]))["claims"][1]["verdict"] == "contradicted"
    # random groups equal grpo here: pgrpo - pgrpo_random = the gain
    ablation = next(c for c in summarize_runs(_runs([0.2, 0.21, 0.19]))["claims"]
                    if c["difference"] == "pgrpo - pgrpo_random")
    assert ablation["verdict"] == "supported"
    assert verdict({"ci_low": None, "ci_high": None}) == "not resolved"


def test_an_equivalence_margin_turns_no_difference_into_a_verdict():
    """pgrpo - grpo in the minority groups of +0.01, -0.01, 0: the mean over groups differs by
    2/3 of that per run, an interval of about +-0.02 around 0, inside a margin of 0.05."""
    runs = _runs([0.01, -0.01, 0.0])
    without, with_margin = summarize_runs(runs), summarize_runs(runs, margin=0.05)

    def mean_claim(s):
        return next(c for c in s["claims"] if c["metric"] == "mean_reward"
                    and c["difference"] == "pgrpo - grpo")

    assert mean_claim(without)["verdict"] == "not resolved" and without["answer"] == "not resolved"
    assert mean_claim(with_margin)["verdict"] == "equivalent"
    assert with_margin["answer"] == "equivalent" and with_margin["margin"] == 0.05
    half = T_975_DF2 * (0.01 * 2 / 3) / math.sqrt(3)  # sd of the per-run differences
    assert mean_claim(with_margin)["ci_high"] == pytest.approx(half)
    # the log-likelihood is not in judge reward: no margin, so no equivalence verdict
    neutral = next(c for c in with_margin["claims"] if c["metric"] == "neutral_loglik_delta")
    assert neutral["margin"] is None
    assert [c["metric"] for c in with_margin["claims"] if c["primary"]] == [
        "mean_reward", "minority_reward", "auc"]
    text = render_comparison(with_margin)
    assert "mean judge reward over groups): equivalent** (equivalence margin ±0.05)" in text
    assert "(primary) pgrpo reaches a higher judge reward" in text


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


def test_convergence_is_judged_only_from_judge_curves_in_every_run():
    def auc_claim(runs):
        return next(c for c in summarize_runs(runs)["claims"] if c["metric"] == "auc")

    runs = _runs([0.2, 0.21, 0.19])
    for k, m in enumerate(runs.values()):  # pgrpo's curve clearly above grpo's in every run
        for g in m["algorithms"]["pgrpo"]["groups"].values():
            g["auc"] = 0.9 + 0.01 * k
    # no curve_source (learned reward on training batches): a hacked reward could do this
    assert auc_claim(runs)["verdict"] == NOT_JUDGED
    for m in runs.values():
        m["curve_source"] = {"grpo": "judge", "pgrpo": "judge", "pgrpo_random": "judge"}
    assert auc_claim(runs)["verdict"] == "supported"
    # one run without the judge curve is enough to withhold the verdict
    next(iter(runs.values()))["curve_source"]["pgrpo"] = "training reward"
    s = summarize_runs(runs)
    assert auc_claim(runs)["verdict"] == NOT_JUDGED
    assert s["curve_source"] == {"grpo": "judge", "pgrpo": "training reward",
                                 "pgrpo_random": "judge"}
    assert "pgrpo: the learned reward on training batches" in render_comparison(s)


def test_claims_need_their_algorithms_and_the_report_renders():
    runs = _runs([0.1, 0.2, 0.3])
    for m in runs.values():
        del m["algorithms"]["pgrpo_random"]
    s = summarize_runs(runs)
    assert not any("random" in c["claim"] for c in s["claims"])
    text = render_comparison(s)
    assert "## The claims" in text and "| maj (10) |" in text and "**not resolved**" in text


def test_gains_over_the_base_are_paired_within_a_run():
    """The base scores 0 in every group of _runs, so pgrpo's gain in min1 per run is its
    reward there: 0.2 + 0.1, 0.2 + 0.2, 0.2 + 0.3 -> mean 0.4, sd 0.1."""
    runs = _runs([0.1, 0.2, 0.3])
    for k, m in enumerate(runs.values()):  # a base that moves with the run: paired away
        for g in SIZES:
            m["base"]["groups"][g]["reward"] = 0.05 * k
            m["algorithms"]["pgrpo"]["groups"][g]["reward"] += 0.05 * k
    gains = gains_over_base(summarize_runs(runs))
    assert set(gains) == {"grpo - base", "pgrpo - base", "pgrpo_random - base"}
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    g = gains["pgrpo - base"]["min1"]
    assert g["mean"] == pytest.approx(0.4) and g["n"] == 3
    assert (g["ci_low"], g["ci_high"]) == pytest.approx((0.4 - half, 0.4 + half))
    # grpo's min1 is 0.2 in every run while the base rises 0, 0.05, 0.1: gain 0.15 [sd 0.05]
    assert gains["grpo - base"]["min1"]["mean"] == pytest.approx(0.15)


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


def test_the_report_says_run_by_run_whether_training_helps_the_users():
    runs = _runs([0.1, 0.2, 0.3])
    s = summarize_runs(runs)  # runs evaluated before the verdict existed: no section
    assert s["helps_users"]["pgrpo"] == {"per_run": s["helps_users"]["pgrpo"]["per_run"],
                                         "n_judged": 0, "helps_in": 0}
    assert "Run by run" not in render_comparison(s)
    verdicts = {"seed0": ("helps", []), "seed1": ("harms", ["min2"]), "seed2": ("helps", [])}
    for name, m in runs.items():
        for a, pol in m["algorithms"].items():
            v, harmed = verdicts[name] if a == "pgrpo" else ("unresolved", [])
            pol.update(gain_vs_base=0.2, gain_ci_low=0.1, gain_ci_high=0.3,
                       helps={"verdict": v, "harmed_groups": harmed})
    s = summarize_runs(runs)
    h = s["helps_users"]
    assert (h["pgrpo"]["helps_in"], h["pgrpo"]["n_judged"]) == (2, 3)
    assert (h["grpo"]["helps_in"], h["grpo"]["n_judged"]) == (0, 3)
    assert [r["verdict"] for r in h["pgrpo"]["per_run"]] == ["helps", "harms", "helps"]
    text = render_comparison(s)
    assert "pgrpo helps in 2 of 3 runs" in text and "grpo helps in 0 of 3 runs" in text
    assert "| pgrpo | seed1 | +0.200 [+0.100, +0.300] | 0.0100 | **harms** | min2 |" in text


@pytest.mark.parametrize("change, message", [
    (lambda m: m["groups"].update(maj=11), "must share their data"),
    (lambda m: m["algorithms"].pop("pgrpo"), "has algorithms"),
    (lambda m: m["settings"].update(seed=7), "not paired"),
])
def test_runs_that_cannot_be_paired_are_refused_naming_the_run(change, message):
    runs = _runs([0.1, 0.2, 0.3])
    change(runs["seed2"])
    with pytest.raises(ValueError, match=message) as err:
        summarize_runs(runs)
    assert "seed2" in str(err.value)


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
