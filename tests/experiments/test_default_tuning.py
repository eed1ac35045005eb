"""benchmarks/default_tuning/tune.py: the rule that picks the default, and a real tiny run.

    python -m pytest -q tests/experiments/test_default_tuning.py

The rule's cases are made by hand; the run trains tiny random models on the tiny pipeline
of tests/experiments/test_compare.py, so its numbers mean nothing: it checks what a row records.
"""

import importlib.util
import json
from pathlib import Path

from test_compare import tiny_pipeline  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("tune", REPO / "benchmarks/default_tuning/tune.py")
tune = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tune)


def row(name, algorithm, gain=0.2, worst=0.0, kl=0.05):
    start = {"a": 0.4, "b": 0.4}
    return {"name": name, "algorithm": algorithm, "judge_curve": {"0": 0.4, "8": 0.4 + gain},
            "start_by_group": start, "final_by_group": {"a": 0.4 + worst, "b": 0.6},
            "kl_to_base": kl}


def test_the_rule_needs_gain_no_group_harmed_and_small_kl():
    assert tune.meets_rule(row("v_s0", "grpo"))
    assert not tune.meets_rule(row("v_s0", "grpo", gain=0.09))
    assert not tune.meets_rule(row("v_s0", "grpo", worst=-0.11))
    assert tune.meets_rule(row("v_s0", "grpo", worst=-0.10))
    assert not tune.meets_rule(row("v_s0", "grpo", kl=0.10))


def test_the_choice_takes_a_variant_passing_every_run_else_the_least_harmful(tmp_path):
    def choose(rows):
        path = tmp_path / "runs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tune.choose(path).splitlines()[-1]

    both = [(s, a) for s in (0, 1) for a in ("grpo", "pgrpo")]
    good = [row(f"good_s{s}", a, gain=0.15) for s, a in both]
    greedy = [row(f"greedy_s{s}", a, gain=0.4, worst=-0.2 if s else 0.0) for s, a in both]
    assert choose(good + greedy) == "chosen: good (meets the rule in every run)"
    mild = [row(f"mild_s{s}", a, worst=-0.12) for s, a in both]
    assert choose(greedy + mild).startswith("chosen: mild (no complete variant")
    # a variant missing one (seed, algorithm) cannot be chosen, however good
    assert choose(greedy + good[:3]).startswith("chosen: greedy")


def test_paired_differences_match_a_hand_computed_t_interval(tmp_path):
    """a - b per (seed, algorithm): gains 0.3, 0.2, 0.1 against 0.1 each -> differences
    0.2, 0.1, 0.0 (mean 0.1, sd 0.1); a run only one variant has is left out."""
    rows = [row("a_s0", "grpo", gain=0.3), row("a_s1", "grpo", gain=0.2),
            row("a_s2", "grpo", gain=0.1, worst=-0.3), row("a_s3", "grpo"),
            *(row(f"b_s{s}", "grpo", gain=0.1) for s in range(3))]
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = tune.paired(path, "a", "b")
    half = 4.302652729911275 * 0.1 / 3 ** 0.5  # t(0.975, df 2), from tables
    assert "paired over 3 (seed, algorithm) runs" in text
    assert f"mean judge gain: +0.100 [{0.1 - half:+.3f}, {0.1 + half:+.3f}] -> not resolved" in text
    # worst group's change: 0, 0, -0.3 against 0 -> mean -0.1
    assert "worst group's change: -0.100" in text
    assert "share 0 (seed, algorithm)" in tune.paired(path, "a", "c")


def test_no_worse_adopts_only_a_change_no_criterion_finds_worse(tmp_path):
    """The adoption rule of a change meant to leave learning as is (bf16 against fp32), on
    six hand-made pairs: each criterion is made to fail on its own."""
    cells = [(s, a) for s in (0, 1, 2) for a in ("grpo", "pgrpo")]
    old = [row(f"fp32_s{s}", a, gain=0.2) for s, a in cells]

    def verdict(variant, gains, worst=0.0, drop=0):
        rows = old + [row(f"{variant}_s{s}", a, gain=g, worst=worst)
                      for (s, a), g in list(zip(cells, gains))[drop:]]
        path = tmp_path / f"{variant}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tune.no_worse(path, variant, "fp32").splitlines()

    jitter = [0.02, -0.02, 0.01, -0.01, 0.03, -0.03]           # differences of mean 0
    assert verdict("same", [0.2 + j for j in jitter])[-1] == "no worse: yes, adopt same"
    # every pair 0.1 lower: the gain's interval lies wholly below 0
    lower = verdict("lower", [0.1 + j for j in jitter])
    assert lower[-1] == "no worse: no, keep fp32" and lower[1].startswith("  MISSED: mean judge gain")
    # differences -0.3, +0.2, ... of mean -0.06: the interval reaches 0, the estimate is too low
    spread = verdict("spread", [0.2 + d for d in (-0.3, 0.2, -0.3, 0.2, -0.3, 0.14)])
    assert spread[1].startswith("  MISSED: mean judge gain, spread - fp32: -0.060")
    assert spread[-1] == "no worse: no, keep fp32"
    # the same gains, but a group falls by 0.2 in every run: worst-group change below 0,
    # and no run meets the rule any more (fp32 meets it in 6)
    harm = verdict("harm", [0.2 + j for j in jitter], worst=-0.2)
    assert [ln.split(":")[0] for ln in harm[1:4]] == ["  met", "  MISSED", "  MISSED"]
    assert harm[3].endswith("harm 0, fp32 6 of 6 (at least 6 - 1)")
    # a pair missing: undecided, whatever the rest says
    assert verdict("part", [0.2 + j for j in jitter], drop=1)[-1] == "no worse: undecided, keep fp32"


def test_a_tuning_run_records_the_judge_curve_kl_and_answer_lengths(tiny_pipeline):  # noqa: F811
    assert tune.main(["tiny_s1", "seed=1", "loss_agg=dr_grpo", "--algorithms", "grpo",
                      "--every", "2", "--per_group", "1", "--samples", "2"]) == 0
    [r] = [json.loads(line) for line in (tune.OUT / "runs.jsonl").read_text().splitlines()]
    assert (r["name"], r["algorithm"], r["overrides"]) == ("tiny_s1", "grpo",
                                                           {"seed": 1, "loss_agg": "dr_grpo"})
    assert sorted(map(int, r["judge_curve"])) == [0, 2]  # the base, then the trained policy
    groups = set(r["start_by_group"])
    # every group with validation prompts (the tiny data split leaves 2 of its 3)
    assert groups == set(r["final_by_group"]) == set(r["final_words_by_group"]) and len(groups) >= 2
    assert r["kl_to_base"] >= 0 and all(w > 0 for w in r["final_words_by_group"].values())
    # a second call skips the finished run
    assert tune.main(["tiny_s1", "seed=1", "--algorithms", "grpo"]) == 0
    assert len((tune.OUT / "runs.jsonl").read_text().splitlines()) == 1
