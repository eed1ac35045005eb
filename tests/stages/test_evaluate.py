"""The evaluate stage end to end on tiny data, and the judge (pgrpo.stages.evaluation.evaluate, pgrpo.stages.evaluation.judge).

    .venv/bin/python -m pytest -q tests/stages/test_evaluate.py

One module fixture runs the real pipeline once: prepare (synthetic, 30 users, 3 personas)
-> assign_groups (label) -> train_reward (tiny random BERT, 1 epoch) -> train_policy for
pgrpo and grpo (tiny random Llama, 2 steps) -> evaluate. The tests read what it wrote.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from pgrpo.core.config import PolicyConfig
from pgrpo.stages.data.personas import make_personas, persona_to_json, utility
from pgrpo.stages.evaluation.evaluate import EvalConfig, evaluate, main
from pgrpo.stages.evaluation.judge import judge_scores
from pgrpo.stages.evaluation.curves import curve_auc
from pgrpo.stages.evaluation.metrics import win_rate
from pgrpo.core.metric_log import read_metrics

ALGS = ["pgrpo", "grpo"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def policy_cfg(tmp: Path, **overrides) -> PolicyConfig:
    # lr 5e-3: two steps move the tiny model visibly, so KL and win rates are not trivial.
    base = {"model": "tiny-random-llama", "steps": 2, "prompts_per_step": 2, "num_generations": 2,
            "max_new_tokens": 8, "micro_batch_size": 4, "lr": 5e-3,
            "prompts": str(tmp / "data" / "prompts.parquet"),
            "groups": str(tmp / "data" / "groups.parquet"), "reward": str(tmp / "reward")}
    return PolicyConfig(**{**base, **overrides})


def eval_cfg(**overrides) -> EvalConfig:
    small = {"prompts_per_group": 2, "samples_per_prompt": 2, "n_boot": 200}
    return EvalConfig(**{**small, **overrides})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pgrpo.stages.groups.assign_groups import AssignConfig, assign_groups
    from pgrpo.stages.data.prepare import PrepareConfig, prepare
    from pgrpo.stages.reward.train_reward import RewardConfig, train_reward
    import pgrpo.stages.reward.training_rewards  # noqa: F401 - reward: judge
    from pgrpo.core.trainer import train_policy

    tmp = tmp_path_factory.mktemp("eval")
    data = tmp / "data"
    prepare(PrepareConfig(n_users=30, n_personas=3, prompts_per_user=2, candidates_per_prompt=3,
                          pairs_per_prompt=1, seed=0), data)
    assign_groups(AssignConfig(method="label"), data / "users.parquet", data / "pairs.parquet",
                  data)
    train_reward(RewardConfig(encoder="tiny-random-bert", epochs=1, max_length=64, batch_size=32),
                 data / "pairs.parquet", data / "groups.parquet", tmp / "reward")
    from pgrpo.stages.evaluation.judge_curve import JudgeCurve

    for alg in ALGS:
        # grpo also logs the judge's validation curve (policy.judge_every) and trains on the
        # judge itself; pgrpo keeps the learned reward and the training-reward curve.
        hooks = [JudgeCurve.from_processed(data, 1, 2, 2, 8, last_step=2)] if alg == "grpo" else []
        reward = {"reward": "judge"} if alg == "grpo" else {}
        train_policy(policy_cfg(tmp, advantage=alg, **reward), tmp / "policy" / alg, hooks=hooks)
    results = evaluate(eval_cfg(), policy_cfg(tmp), ALGS, data, tmp / "reward", tmp / "policy",
                       tmp / "reports")
    return tmp, results


def test_required_key_path_for_every_group_and_algorithm(run):
    tmp, results = run
    on_disk = json.loads((tmp / "reports" / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    groups = sorted(pd.read_parquet(tmp / "data" / "groups.parquet")["group"].unique())
    assert sorted(on_disk["groups"]) == groups and on_disk["judge"] == "persona_utility"
    for alg in ALGS:
        a = on_disk["algorithms"][alg]
        for g in groups:
            r = a["groups"][g]
            assert isinstance(r["reward"], float)
            assert r["ci_low"] <= r["reward"] <= r["ci_high"]
            assert r["n"] == 4 and 0 <= r["win_rate"] <= 1
            assert set(r) >= {"learned_reward", "reward_gap", "steps_to_90", "auc"}
        rewards = [a["groups"][g]["reward"] for g in groups]
        assert a["mean_reward"] == pytest.approx(np.mean(rewards))
        assert a["worst_group_reward"] == min(a["groups"][g]["reward"] for g in groups)
        assert a["kl_to_base"] > 0  # the trained model differs from the base
        base_ll = on_disk["base"]["neutral_loglik"]
        assert a["neutral_loglik_delta"] == pytest.approx(a["neutral_loglik"] - base_ll)
    assert on_disk["base"]["kl_to_base"] == 0 and on_disk["base"]["neutral_loglik_delta"] == 0


def test_samples_are_paired_and_scored_as_reported(run):
    tmp, results = run
    text = (tmp / "reports" / "samples.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    by_policy = {p: [r for r in rows if r["policy"] == p] for p in ["base", *ALGS]}
    keys = [(r["prompt_id"], r["sample"]) for r in by_policy["base"]]
    assert len(keys) == len(set(keys)) == 3 * 2 * 2
    judge = pd.read_parquet(tmp / "data" / "judge.parquet")
    for alg in ALGS:
        # Same prompts, same samples, same order: paired.
        assert [(r["prompt_id"], r["sample"]) for r in by_policy[alg]] == keys
        ours = [r["judge"] for r in by_policy[alg]]
        # The judge is the persona's utility, recomputed here from judge.parquet.
        again = judge_scores(judge, [r["user_id"] for r in by_policy[alg]],
                             [r["completion"] for r in by_policy[alg]])
        assert ours == pytest.approx(again.tolist())
        for g, r in results["algorithms"][alg]["groups"].items():
            mine = [x["judge"] for x in by_policy[alg] if x["group"] == g]
            base = [x["judge"] for x in by_policy["base"] if x["group"] == g]
            assert r["reward"] == pytest.approx(np.mean(mine))
            assert r["win_rate"] == pytest.approx(win_rate(mine, base))
            assert r["learned_reward"] == pytest.approx(
                np.mean([x["learned"] for x in by_policy[alg] if x["group"] == g]))


def test_report_and_curves_carry_the_metrics(run):
    tmp, results = run
    report = (tmp / "reports" / "report.md").read_text()
    section = report.split("## Reward per group")[1].split("##")[0]
    for g in results["groups"]:
        row = next(line for line in section.splitlines() if line.startswith(f"| {g} |"))
        for name in ["base", *ALGS]:
            r = (results["base"] if name == "base" else results["algorithms"][name])["groups"][g]
            assert f"{r['reward']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" in row
    for name in ALGS:
        head = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        assert f"{results['algorithms'][name]['mean_reward']:.3f}" in head
    assert "figures/group_rewards.png" in report and "## Reading" in report

    with (tmp / "reports" / "curves.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "algorithm", "group", "reward", "source"]
    for alg in ALGS:
        logged = read_metrics(tmp / "policy" / alg / "metrics.jsonl")
        source = "judge" if alg == "grpo" else "train"  # grpo logged the judge's curve
        assert {x["source"] for x in rows if x["algorithm"] == alg} == {source}
        for g, r in results["algorithms"][alg]["groups"].items():
            ours = [(int(x["step"]), float(x["reward"])) for x in rows
                    if x["algorithm"] == alg and x["group"] == g]
            name = f"{source}/reward/{g}"
            expected = [(m["step"], m[name]) for m in logged if m.get(name) is not None]
            assert ours == expected
            if ours:
                assert r["auc"] == pytest.approx(curve_auc(*zip(*ours)))
            else:
                assert r["auc"] is None and r["steps_to_90"] is None


def test_figures_are_valid_pngs(run):
    tmp, _ = run
    for name in ["group_rewards.png", "final_rewards.png"]:
        path = tmp / "reports" / "figures" / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 400
        assert image.std() > 0.01  # not a blank canvas


def test_missing_inputs_name_the_stage_and_write_nothing(run, tmp_path):
    tmp, _ = run
    out = tmp_path / "reports"
    with pytest.raises(FileNotFoundError, match=r"nope.*train_policy --algorithm nope"):
        evaluate(eval_cfg(), policy_cfg(tmp), ["pgrpo", "nope"], tmp / "data", tmp / "reward",
                 tmp / "policy", out)
    with pytest.raises(FileNotFoundError, match="reward model.*train_reward"):
        evaluate(eval_cfg(), policy_cfg(tmp), ALGS, tmp / "data", tmp / "no_reward",
                 tmp / "policy", out)
    no_groups = tmp_path / "data"
    no_groups.mkdir()
    for name in ["prompts.parquet", "judge.parquet"]:
        shutil.copy(tmp / "data" / name, no_groups / name)
    with pytest.raises(FileNotFoundError, match="groups.parquet.*assign_groups"):
        evaluate(eval_cfg(), policy_cfg(tmp), ALGS, no_groups, tmp / "reward", tmp / "policy", out)
    assert not out.exists()


def test_cli_reads_algorithms_from_params_and_reports_errors(run, tmp_path, capsys):
    tmp, _ = run
    params = tmp_path / "params.yaml"
    params.write_text("policy: {model: tiny-random-llama, max_new_tokens: 8}\n"
                      "evaluate: {prompts_per_group: 1}\n"
                      "algorithms: {pgrpo: {advantage: pgrpo}, missing_alg: {advantage: grpo}}\n")
    args = ["--params", str(params), "--processed_dir", str(tmp / "data"),
            "--reward_dir", str(tmp / "reward"), "--policy_root", str(tmp / "policy"),
            "--reports_dir", str(tmp_path / "r")]
    assert main(args) == 1
    assert "missing_alg" in capsys.readouterr().err
    params.write_text("evaluate: {prompts_per_grup: 1}\n")
    assert main(args) == 2
    assert "prompts_per_grup" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_no_judge_falls_back_to_the_learned_reward(run, tmp_path):
    """The file source writes judge.parquet with zero rows: the learned reward is the score."""
    tmp, _ = run
    data = tmp_path / "data"
    shutil.copytree(tmp / "data", data)
    pd.read_parquet(data / "judge.parquet").iloc[:0].to_parquet(data / "judge.parquet")
    res = evaluate(eval_cfg(prompts_per_group=1, samples_per_prompt=1), policy_cfg(tmp), ["grpo"],
                   data, tmp / "reward", tmp / "policy", tmp_path / "reports")
    assert res["judge"] == "none"
    for r in res["algorithms"]["grpo"]["groups"].values():
        assert r["reward"] == r["learned_reward"] and r["reward_gap"] is None
    assert "no judge" in (tmp_path / "reports" / "report.md").read_text()


# ------------------------------------------------------------------ the judge alone

def test_judge_scores_persona_utility_and_heldout_items():
    majority, emoji_fan = make_personas(2)
    judge = pd.DataFrame({"user_id": ["u1", "u2"], "kind": "persona_utility",
                          "payload": [persona_to_json(majority), persona_to_json(emoji_fan)]})
    texts = ["🎵 Try Take Five! 🎷", "I'd suggest Jolene by Dolly Parton, a warm country song."]
    got = judge_scores(judge, ["u2", "u1"], texts)
    assert got.tolist() == [utility(emoji_fan, texts[0]), utility(majority, texts[1])]

    items = [{"title": "Matrix, The (1999)", "genres": ["Action", "Sci-Fi"], "rating": 5},
             {"title": "Toy Story (1995)", "genres": ["Comedy"], "rating": 4}]
    ml = pd.DataFrame({"user_id": ["7"], "kind": "heldout_items", "payload": [json.dumps(items)]})
    # A held-out title: 1. Otherwise half the share of the held-out movies' genres named.
    texts = ["Watch The Matrix.", "Some sci-fi and comedy?", "Nothing."]
    got = judge_scores(ml, ["7", "7", "7"], texts)
    assert got.tolist() == pytest.approx([1.0, 0.5 * 2 / 3, 0.0])


def test_judge_errors_are_clear():
    judge = pd.DataFrame({"user_id": ["u1"], "kind": "persona_utility",
                          "payload": [persona_to_json(make_personas(2)[0])]})
    with pytest.raises(ValueError, match=re.escape("1 users have no judge row: ['u9']")):
        judge_scores(judge, ["u1", "u9"], ["a", "b"])
    with pytest.raises(ValueError, match="no rows"):
        judge_scores(judge.iloc[:0], ["u1"], ["a"])
    mixed = pd.concat([judge, judge.assign(user_id="u2", kind="heldout_items")])
    with pytest.raises(ValueError, match="one kind"):
        judge_scores(mixed, ["u1"], ["a"])


def test_judge_curve_logged_from_step_0_and_read_for_efficiency(run):
    tmp, results = run
    rows = read_metrics(tmp / "policy" / "grpo" / "metrics.jsonl")
    judged = [r["step"] for r in rows if "judge/mean_reward" in r]
    assert judged == [0, 1, 2]
    assert results["curve_source"] == {"pgrpo": "training reward", "grpo": "judge"}
    groups = [k.split("/", 2)[2] for k in rows[0] if k.startswith("judge/reward/")]
    assert groups and all(isinstance(rows[0][f"judge/reward/{g}"], float) for g in groups)
    # The AUC of grpo's groups is the judge curve's, not the training reward's.
    g = groups[0]
    steps = [r["step"] for r in rows if f"judge/reward/{g}" in r]
    values = [r[f"judge/reward/{g}"] for r in rows if f"judge/reward/{g}" in r]
    assert results["algorithms"]["grpo"]["groups"][g]["auc"] == pytest.approx(curve_auc(steps, values))


def test_judge_curve_points_reuse_the_same_draws():
    """Two calls on the same model give the same numbers and leave torch's RNG where it was."""
    import torch

    from pgrpo.stages.data.personas import make_personas, persona_to_json
    from pgrpo.stages.evaluation.judge_curve import JudgeCurve
    from pgrpo.core.models import load_policy
    from pgrpo.core.prompts import from_records

    personas = make_personas(2)
    prompts = from_records([{"prompt": f"Recommend a song {i}", "group": p.name, "user_id": f"u{i}"}
                            for i, p in enumerate(personas)], [p.name for p in personas])
    judge = pd.DataFrame({"user_id": ["u0", "u1"], "kind": "persona_utility",
                          "payload": [persona_to_json(p) for p in personas]})
    model, tok = load_policy("tiny-random-llama")
    hook = JudgeCurve(prompts, judge, every=2, samples=2, max_new_tokens=6)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = hook(0, model, tok)
    assert torch.equal(torch.get_rng_state(), state)
    assert hook(2, model, tok) == first and hook(1, model, tok) == {}
    assert set(first) == {"judge/reward/mainstream", "judge/reward/emoji_fan", "judge/mean_reward"}


def test_reward_check_champion_and_gain_intervals(run):
    tmp, results = run
    from pgrpo.core.advantages import ADVANTAGE_ESTIMATORS

    check = results["reward_check"]
    assert check["estimators"] == sorted(ADVANTAGE_ESTIMATORS)
    for g, v in check["groups"].items():
        assert -1 <= v["within_corr"] <= 1 and 0 <= v["between_share"] <= 1
        assert all(f"adv_corr/{e}" in v for e in ADVANTAGE_ESTIMATORS)
    assert results["training_reward"] == str(tmp / "reward")
    assert results["champion_by"] == "val_mean_reward" and results["champion"] in ALGS
    vals = {a: results["algorithms"][a]["val_mean_reward"] for a in ALGS}
    assert results["champion"] == max(vals, key=lambda a: (vals[a], a))
    for alg in ALGS:
        r = results["algorithms"][alg]
        assert r["gain_ci_low"] <= r["gain_vs_base"] <= r["gain_ci_high"]
        assert r["gain_vs_base"] == pytest.approx(r["mean_reward"] - results["base"]["mean_reward"])
        assert r["mean_ci_low"] <= r["mean_reward"] <= r["mean_ci_high"]
    report = (tmp / "reports" / "report.md").read_text()
    assert "reward-signal check" in report and f"**{results['champion']}**" in report
    from pgrpo.stages.evaluation.metrics import helps_users
    assert "## Does training help the users?" in report
    for alg in ALGS:  # the rule's verdict, as the rule computes it, in metrics and report
        r = results["algorithms"][alg]
        assert r["helps"] == helps_users(r, results["base"], 0.1)
        assert f"| {alg} | **{r['helps']['verdict']}** |" in report


def test_val_and_test_prompts_never_overlap(run):
    tmp, _ = run
    from pgrpo.stages.evaluation.evaluate import eval_prompts, eval_role

    data = tmp / "data"
    test = eval_prompts(data / "prompts.parquet", data / "groups.parquet", 50, 0)
    val = eval_prompts(data / "prompts.parquet", data / "groups.parquet", 50, 0, role="val")
    ids_t = {m["prompt_id"] for m in test.metadata}
    ids_v = {m["prompt_id"] for m in val.metadata}
    assert ids_t and ids_v and not ids_t & ids_v
    assert {eval_role(i) for i in ids_v} == {"val"} and {eval_role(i) for i in ids_t} == {"test"}


def test_a_tuning_report_is_on_validation_prompts_and_says_so(run, tmp_path):
    """report_prompts: val puts the report's numbers and verdicts on the validation prompts
    (issue 25 item 3: tune by the report's own rule, never on test prompts)."""
    tmp, _ = run
    from pgrpo.stages.evaluation.evaluate import eval_role

    with pytest.raises(ValueError, match="val_prompts_per_group: 0"):
        eval_cfg(report_prompts="val")  # validation prompts would both pick and be reported
    results = evaluate(eval_cfg(report_prompts="val", val_prompts_per_group=0), policy_cfg(tmp),
                       ALGS, tmp / "data", tmp / "reward", tmp / "policy", tmp_path / "reports")
    rows = [json.loads(line) for line in (tmp_path / "reports" / "samples.jsonl").read_text()
            .splitlines()]
    assert rows and {eval_role(r["prompt_id"]) for r in rows} == {"val"}
    assert set(results["algorithms"]) == set(ALGS) and results["settings"]["report_prompts"] == "val"
    report = (tmp_path / "reports" / "report.md").read_text()
    assert "**Tuning report: every number below is on the validation prompts" in report
    test_report = (tmp / "reports" / "report.md").read_text()  # the fixture's, on test prompts
    assert "Tuning report" not in test_report and "Held-out test prompts" in test_report
