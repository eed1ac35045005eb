"""The comparison's statistics (pgrpo.experiments.compare_summary): t-intervals, paired
differences, claims and their verdicts, gains over the base, the report, on hand-made runs.

    python -m pytest -q tests/experiments/test_compare_summary.py

Expected values are computed by hand here (t quantiles from tables), not by the code
under test. The comparison's config, folders and a real tiny run: test_compare.py.
"""

import math

import pytest

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
