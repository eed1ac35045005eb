"""The mechanism experiment: verdict rule on hand-made intervals, the world's pieces against
hand computations, the summary against a scipy reference, and a tiny grid end to end."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pgrpo.stages.data.personas import utility
from pgrpo.experiments.mechanism import ConditionReward, cells
from pgrpo.experiments.mechanism_config import MechanismConfig
from pgrpo.experiments.mechanism_world import _pieces, build_word_tokenizer, make_prompts, personas, sft_pairs
from pgrpo.experiments.mechanism_report import plan_seeds, power_seeds, summarize, verdict
from pgrpo.stages.evaluation.metrics import seeds_to_resolve, t_interval


@pytest.mark.parametrize("lo, hi, want", [
    (0.01, 0.40, "supported"),     # above 0
    (0.001, 0.02, "supported"),    # above 0, even inside the margin: the claim is "higher"
    (-0.40, -0.01, "refuted"),     # below 0
    (-0.03, 0.04, "refuted"),      # covers 0 but inside (-margin, margin): equivalent
    (-0.05, 0.04, "unresolved"),   # touches -margin: not shown equivalent
    (-0.10, 0.30, "unresolved"),   # wide
    (-0.01, 0.20, "unresolved"),   # covers 0, reaches past the margin
    (math.nan, math.nan, "unresolved"),  # one seed: no interval
    (None, None, "unresolved"),
])
def test_verdict_rule_on_hand_made_intervals(lo, hi, want):
    assert verdict(lo, hi, margin=0.05) == want


def test_verdict_with_margin_zero_never_claims_equivalence():
    assert verdict(-1e-9, 1e-9, margin=0.0) == "unresolved"


def test_word_tokenizer_keeps_what_the_judge_reads():
    """Encode -> decode keeps the words, newlines (list lines), emoji and '!' of a text."""
    tok = build_word_tokenizer(n_samples=2000)
    text = "🎸\n- Everlong by Foo Fighters, rock\n- Paranoid by Black Sabbath, metal! 🎵"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(_pieces(text)) and tok.unk_token_id not in ids
    back = tok.decode(ids, skip_special_tokens=True)
    assert back.split() == text.split()
    for p in personas(MechanismConfig()):
        assert utility(p, back) == pytest.approx(utility(p, text))


def test_condition_rewards_against_hand_computation():
    ps = personas(MechanismConfig())
    texts = ["I'd suggest Everlong by Foo Fighters. It has a steady rhythm and a memorable chorus.",
             "🎛️ Xtal by Aphex Twin! 🎵", "- Paranoid by Black Sabbath\n- The Trooper by Iron Maiden"]
    groups = np.array([0, 1, 3])
    meta = [{"offset_z": 0.5}, {"offset_z": -2.0}, {"offset_z": 1.0}]
    import torch

    g = torch.tensor(groups)
    clean = [utility(ps[k], t) for k, t in zip(groups, texts)]
    got = ConditionReward(ps, "clean", 0.7, 0.3)(None, texts, g, meta).numpy()
    np.testing.assert_allclose(got, clean, rtol=1e-6)
    got = ConditionReward(ps, "offset", 0.7, 0.3)(None, texts, g, meta).numpy()
    np.testing.assert_allclose(got, np.array(clean) + 0.7 * np.array([0.5, -2.0, 1.0]), rtol=1e-6)
    got = ConditionReward(ps, "trap", 0.7, 0.3)(None, texts, g, meta).numpy()
    credit = [0.0] + [0.3 * max(0.0, utility(ps[0], t)) for t in texts[1:]]  # majority: none
    np.testing.assert_allclose(got, np.array(clean) + credit, rtol=1e-6)


def test_prompts_are_a_function_of_the_seed_with_groups_by_size():
    cfg = MechanismConfig(train_users=40, prompts_per_user=2, eval_prompts_per_group=3)
    a, ha = make_prompts(cfg, 3)
    b, _ = make_prompts(cfg, 3)
    c, _ = make_prompts(cfg, 4)
    assert a.prompts == b.prompts and a.metadata == b.metadata and a.prompts != c.prompts
    counts = np.bincount(a.group_ids.numpy(), minlength=cfg.n_personas)
    assert counts.sum() == 80 and counts[0] == counts.max()  # the majority is the largest
    assert np.bincount(ha.group_ids.numpy()).tolist() == [3] * cfg.n_personas
    assert not set(ha.prompts) & set(a.prompts)  # held-out prompts are new users


def test_sft_answers_follow_the_tilt():
    """tilt 1: every answer is the majority's style; tilt 0: a minority user's answer is in
    their own style (the best of candidates under their utility), a majority user's is not."""
    cfg = MechanismConfig(sft_examples=200, style_best_of=4)
    ps = personas(cfg)

    def user_of(prompt):
        (p,) = [p for p in ps if any(h in prompt for h in p.hints)]
        return p

    own = {}
    for tilt in (0.0, 1.0):
        pairs = [(user_of(q), a) for q, a in sft_pairs(cfg, tilt)]
        own[tilt] = np.mean([utility(u, a) for u, a in pairs if u is not ps[0]])
        majority = [utility(ps[0], a) for u, a in pairs if u is ps[0]]
        assert np.mean(majority) > 1.0  # majority users: the majority's style at any tilt
    assert own[0.0] > own[1.0] + 1.0  # minority users get their own style at tilt 0


def test_grid_respects_sgd_subsets():
    cfg = MechanismConfig(tilts=[0.5, 0.8], conditions=["clean", "trap"], estimators=["grpo", "pgrpo"],
                          seeds=[0, 1], optimizers=["adamw", "sgd"], sgd_tilts=[0.8],
                          sgd_conditions=["clean"], sgd_estimators=["grpo"])
    grid = cells(cfg)
    assert len([c for c in grid if c.optimizer == "adamw"]) == 2 * 2 * 2 * 2
    assert {(c.tilt, c.condition, c.estimator) for c in grid if c.optimizer == "sgd"} == {
        (0.8, "clean", "grpo")}
    assert len(grid) == len(set(grid)) == 16 + 2


def _fake(opt, cond, tilt, est, seed, final, steps=(0, 5, 10)):
    """A cell result whose judge curve per group is linear from 0 to `final`."""
    groups = ["maj", "min"]
    return {"cell": {"optimizer": opt, "condition": cond, "tilt": tilt, "estimator": est, "seed": seed},
            "eval_steps": list(steps), "offset_sd": 0.0, "seconds": 1.0,
            "judge": {g: [final[i] * s / steps[-1] for s in steps] for i, g in enumerate(groups)}}


def test_summary_pairs_by_seed_and_matches_a_scipy_t_interval():
    cfg = MechanismConfig(estimators=["grpo", "pgrpo", "pgrpo_random"], seeds=[0, 1, 2, 3],
                          conditions=["clean"], tilts=[0.8], optimizers=["adamw"])
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(size=4) * 5  # large between seeds, cancels in the pairs
    gain = np.array([0.20, 0.25, 0.15, 0.22])
    results = []
    for s in range(4):
        base = 1.0 + seed_effect[s]
        results += [_fake("adamw", "clean", 0.8, "grpo", s, [base, base]),
                    _fake("adamw", "clean", 0.8, "pgrpo", s, [base + gain[s], base + gain[s]]),
                    _fake("adamw", "clean", 0.8, "pgrpo_random", s, [base, base])]
    (block,) = summarize(results, cfg)["blocks"]
    d = block["estimators"]["pgrpo"]["vs_reference"]["final_mean"]
    half = stats.t.ppf(0.975, 3) * gain.std(ddof=1) / 2
    assert d["mean"] == pytest.approx(gain.mean()) and d["lo"] == pytest.approx(gain.mean() - half)
    # AUC of a linear curve 0 -> f over the span is f / 2
    auc = block["estimators"]["pgrpo"]["vs_reference"]["auc_mean"]
    assert auc["mean"] == pytest.approx(gain.mean() / 2)
    got = {c["id"]: c["verdict"] for c in block["claims"]}
    assert got == {"higher_final": "supported", "faster": "supported", "random_loses_gain": "supported"}
    # planning: the spread read back from the interval gives what the values themselves give
    final = next(c for c in block["claims"] if c["id"] == "higher_final")
    assert final["seeds_to_decide"] == seeds_to_resolve(gain, margin=cfg.margin) == 3


def test_planning_reads_the_spread_back_from_an_interval():
    values = [0.31, -0.12, 0.44, 0.05, 0.27, -0.02, 0.19, 0.36]  # mean 0.185, sd ~0.19
    mean, lo, hi = t_interval(values)
    got = plan_seeds({"mean": mean, "lo": lo, "hi": hi, "n": len(values)}, 0.95, 0.1)
    assert got == seeds_to_resolve(values, margin=0.1)
    # ... and by hand: the smallest n with t_{n-1} * sd / sqrt(n) < |mean| (the margin is
    # below the mean here, so excluding 0 comes first)
    sd = np.std(values, ddof=1)
    assert stats.t.ppf(0.975, got - 1) * sd / np.sqrt(got) < np.mean(values)
    assert stats.t.ppf(0.975, got - 2) * sd / np.sqrt(got - 1) >= np.mean(values)
    assert plan_seeds({"mean": 0.2, "lo": math.nan, "hi": math.nan, "n": 1}, 0.95, 0.1) is None


def test_power_seeds_is_the_count_that_decides_the_share_of_the_papers_claims():
    rows = [("adamw clean 0.5", {"higher_final": 10, "faster": 7, "random_loses_gain": None,
                                 "scale_faster": 2}),  # not a paper claim: not counted
            ("sgd clean 0.8", {"higher_final": 40, "faster": 25})]
    # the paper's five planning numbers, sorted: 7, 10, 25, 40, > 100
    assert power_seeds(rows, share=0.75) == 40  # 4 of 5 (ceil(3.75)) decided at 40
    assert power_seeds(rows, share=0.5) == 25   # ceil(2.5) = 3 of 5
    assert power_seeds(rows, share=1.0) is None  # one claim needs more than 100 seeds
    assert power_seeds([("x", {"scale_faster": 3})]) is None  # no paper claim in these blocks


def test_tiny_grid_end_to_end_resumes_and_pairs(tmp_path):
    """Real SFT, Trainer steps and judge on a grid of 4 cells in this process; a second run
    reuses every cell; step 0 (the base policy) is judged identically for both estimators."""
    from pgrpo.experiments.mechanism_run import run_experiment

    cfg = MechanismConfig(tilts=[0.8], conditions=["offset"], estimators=["grpo", "pgrpo"],
                          seeds=[0, 1], optimizers=["adamw"], sft_examples=60, sft_epochs=1,
                          train_users=8, eval_prompts_per_group=1, eval_generations=2, steps=2,
                          eval_every=1, prompts_per_step=2, max_new_tokens=12, hidden_size=32,
                          workers=1, work_dir=str(tmp_path / "work"),
                          report_dir=str(tmp_path / "report"))
    summary = run_experiment(cfg, log=lambda *_: None)
    (block,) = summary["blocks"]
    assert block["seeds"] == [0, 1] and block["eval_steps"] == [0, 1, 2] and block["offset_sd"] > 0
    cell_files = sorted((tmp_path / "work" / "cells").rglob("*.json"))
    assert len(cell_files) == 4
    by = {(r["cell"]["estimator"], r["cell"]["seed"]): r
          for r in (json.loads(p.read_text()) for p in cell_files)}
    for s in (0, 1):
        assert {g: v[0] for g, v in by[("grpo", s)]["judge"].items()} == \
               {g: v[0] for g, v in by[("pgrpo", s)]["judge"].items()}
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Verdicts" in report and "higher_final" in report
    assert (tmp_path / "report" / "judge_adamw_tilt0.8.png").stat().st_size > 1000
    assert "## Planning: seeds that would decide each claim" in report
    assert (tmp_path / "report" / "planning.png").stat().st_size > 1000
    mtimes = [p.stat().st_mtime_ns for p in cell_files]
    again = run_experiment(cfg, log=lambda *_: None)
    assert [p.stat().st_mtime_ns for p in cell_files] == mtimes  # nothing re-ran
    assert again["blocks"][0]["claims"] == block["claims"]


def test_grpo_ignores_a_per_prompt_offset(tmp_path):
    """The same seed under clean and offset rewards: GRPO's judge curve is the same."""
    from pgrpo.experiments.mechanism_run import run_grid

    cfg = MechanismConfig(tilts=[0.8], conditions=["clean", "offset"], estimators=["grpo"],
                          seeds=[0, 1], optimizers=["adamw"], sft_examples=60, sft_epochs=1,
                          train_users=8, eval_prompts_per_group=1, eval_generations=2, steps=3,
                          eval_every=3, prompts_per_step=2, max_new_tokens=12, hidden_size=32,
                          workers=1, work_dir=str(tmp_path))
    summary = summarize(run_grid(cfg, log=lambda *_: None), cfg)
    assert summary["grpo_offset_invariant"] == [2, 2]


def test_cells_are_logged_to_mlflow_one_run_each(store, tmp_path):
    """Tracking (off by default): a parent run and one child per cell, tagged and with curves."""
    from pgrpo.experiments.mechanism_run import log_to_mlflow

    cfg = MechanismConfig(experiment="pgrpo-mechanism-test")
    results = [_fake("sgd", "trap", 0.95, "pgrpo_scale", 3, [1.0, 0.5]),
               _fake("sgd", "trap", 0.95, "grpo", 3, [0.8, 0.1])]
    params = tmp_path / "mechanism.yaml"
    params.write_text("mechanism:\n  steps: 10\n")
    parent = log_to_mlflow(results, cfg, params)
    exp = store.get_experiment_by_name("pgrpo-mechanism-test")
    runs = store.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(runs) == 2
    run = next(r for r in runs if r.data.tags["mechanism.estimator"] == "pgrpo_scale")
    assert {k: run.data.tags[f"mechanism.{k}"] for k in ("optimizer", "condition", "tilt", "seed")} == \
        {"optimizer": "sgd", "condition": "trap", "tilt": "0.95", "seed": "3"}
    assert run.data.metrics["final_mean"] == pytest.approx(0.75)
    history = store.get_metric_history(run.info.run_id, "judge/min")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (5, 0.25), (10, 0.5)]


def test_ci_preset_runs_as_the_real_prefect_flow(tmp_path, monkeypatch):
    """`python -m flows.mechanism --preset ci` (~2 minutes): every cell, verdicts, report.
    Not marked slow: issue 13 wants the mechanism experiment's small version in CI."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.mechanism import mechanism

    monkeypatch.chdir(tmp_path)  # the preset's work and report folders are relative
    with prefect_test_harness(server_startup_timeout=None):
        summary = mechanism(preset="ci")
    assert summary["n_cells"] == summary["expected_cells"] == 45
    verdicts = {c["verdict"] for b in summary["blocks"] for c in b["claims"]}
    assert verdicts <= {"supported", "refuted", "unresolved"}
    assert (tmp_path / "outputs/mechanism_ci/report/report.md").is_file()


def test_grid_on_a_local_dask_cluster_matches_the_process_pool(tmp_path, monkeypatch):
    """The cells as Prefect tasks on a real Dask scheduler and two worker processes
    (DaskTaskRunner, the mechanism flow's dask_address='local'): every cell's result equals
    the process pool's."""
    pytest.importorskip("prefect_dask")
    from prefect.testing.utilities import prefect_test_harness

    from flows.dask_runner import dask_task_runner
    from flows.mechanism import _cells_on_dask
    from pgrpo.experiments.mechanism_config import load_config
    from pgrpo.experiments.mechanism_run import run_grid

    tiny = {"tilts": [0.8], "conditions": ["offset"], "estimators": ["grpo", "pgrpo"],
            "seeds": [0, 1], "optimizers": ["adamw"], "sft_examples": 60, "sft_epochs": 1,
            "train_users": 8, "eval_prompts_per_group": 1, "eval_generations": 2, "steps": 2,
            "eval_every": 1, "prompts_per_step": 2, "max_new_tokens": 12, "hidden_size": 32,
            "workers": 2}
    (tmp_path / "dask").mkdir()
    (tmp_path / "pool").mkdir()
    monkeypatch.chdir(tmp_path / "dask")  # the preset's work folder is relative
    with prefect_test_harness(server_startup_timeout=None):
        ran = _cells_on_dask.with_options(task_runner=dask_task_runner("local", 2))("ci", tiny)
    assert ran == 4
    monkeypatch.chdir(tmp_path / "pool")
    policies = Path("outputs/mechanism_ci/policies")  # the same base policy, not made twice
    shutil.copytree(tmp_path / "dask" / policies, policies)
    pooled = run_grid(load_config("ci", tiny), log=lambda *_: None)

    def cell_results(root):
        files = sorted((root / "outputs/mechanism_ci/cells").rglob("*.json"))
        return {f.relative_to(root): {k: v for k, v in json.loads(f.read_text()).items()
                                      if k != "seconds"} for f in files}

    on_dask = cell_results(tmp_path / "dask")
    assert len(on_dask) == len(pooled) == 4
    assert on_dask == cell_results(tmp_path / "pool")
