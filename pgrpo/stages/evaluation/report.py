"""The markdown evaluation report (reports/report.md), rendered from metrics.json's dict.

    from pgrpo.stages.evaluation.report import render_report
    text = render_report(json.load(open("reports/metrics.json")))

Sections: headline table (one row per policy), per-group reward with every policy side
by side, per-group details, figures, and a plain-English reading generated from the
numbers. The reading states what the intervals show and no more: intervals are per
policy (not of the difference), so overlap does not prove "no difference", and disjoint
intervals from a handful of prompts are a hint, not a result.
"""

from __future__ import annotations

# learned gain - judge gain (in SD units) above which the reading flags a group.
HACKING_SD = 1.0
# Neutral-text log-likelihood changes smaller than this (nats/token) read as "unchanged".
LOGLIK_NOISE = 0.01


def fmt(x, digits: int = 3, signed: bool = False) -> str:
    if x is None:
        return "–"
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def ci(r: dict) -> str:
    """'reward [lo, hi]' of one group entry."""
    if r.get("reward") is None:
        return "–"
    return f"{fmt(r['reward'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"


def markdown_table(header: list[str], rows: list[list], left: int | None = None) -> list[str]:
    """A markdown table's lines (every renderer of the project uses this one): with `left`,
    the first `left` columns are names (left-aligned) and the rest numbers (right-aligned);
    without, no alignment is set. Cells are str()-ed."""
    rule = "|" + ("---|" * len(header) if left is None else
                  "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|")
    return ["| " + " | ".join(map(str, header)) + " |", rule,
            *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    return markdown_table(header, rows, left)


def _disjoint(a: dict, b: dict) -> bool:
    return a["ci_low"] > b["ci_high"] or b["ci_low"] > a["ci_high"]


def _listed(names: list[str]) -> str:
    return f" ({', '.join(names)})" if names else ""


def reading(results: dict) -> list[str]:
    """Sentences that say what the numbers show, each with its caveat."""
    algs, base, s = results["algorithms"], results["base"], results["settings"]
    groups = [g for g, n in results["eval_prompts"].items() if n > 0]
    score = "judge reward" if results["judge"] != "none" else "learned reward"
    out = []
    for alg, r in algs.items():
        if r["mean_reward"] is None:
            continue
        above = [g for g in groups if r["groups"][g]["reward"] > base["groups"][g]["reward"]]
        sure = [g for g in above if _disjoint(r["groups"][g], base["groups"][g])]
        delta = fmt(r["mean_reward"] - base["mean_reward"], signed=True)
        out.append(
            f"**{alg}** vs the base model: mean {score} over groups {fmt(r['mean_reward'])} vs "
            f"{fmt(base['mean_reward'])} ({delta}); higher in {len(above)} of {len(groups)} "
            "groups, "
            f"with intervals clear of the base's in {len(sure)}{_listed(sure)}; overall win rate "
            f"{fmt(r['win_rate'])} (0.5 = no better than the base).")
    names = list(algs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = algs[a], algs[b]
            a_wins = [g for g in groups if ra["groups"][g]["reward"] > rb["groups"][g]["reward"]]
            sure = [g for g in groups if _disjoint(ra["groups"][g], rb["groups"][g])]
            verdict = "." if sure else ", so this evaluation cannot tell them apart in any group."
            out.append(
                f"**{a}** vs **{b}**: {a} is higher in {len(a_wins)} of {len(groups)} groups; the "
                f"intervals are disjoint in {len(sure)}{_listed(sure)}{verdict} Worst group: "
                f"{ra['worst_group']} ({fmt(ra['worst_group_reward'])}) vs {rb['worst_group']} "
                f"({fmt(rb['worst_group_reward'])}); minority-majority gap "
                f"{fmt(ra['minority_majority_gap'], signed=True)} vs "
                f"{fmt(rb['minority_majority_gap'], signed=True)}.")
    for alg, r in algs.items():
        d = r["neutral_loglik_delta"]
        ll = ("essentially unchanged" if abs(d) < LOGLIK_NOISE else
              "higher (no sign of forgetting)" if d > 0 else
              "lower: some loss of general language modelling")
        hacked = [g for g in groups if (r["groups"][g]["reward_gap"] or 0) > HACKING_SD]
        text = (f"**{alg}** drifted {fmt(r['kl_to_base'], 4)} nats/token from the base (KL on its "
                f"own samples); its log-likelihood of the neutral text is {ll} "
                f"({fmt(d, 4, signed=True)} nats/token).")
        if hacked:
            text += (f" In {', '.join(hacked)} its learned reward rose more than {HACKING_SD:g} SD "
                     "beyond the judge's gain: possible reward hacking, read those completions in "
                     "samples.jsonl.")
        out.append(text)
    empty = [g for g, n in results["eval_prompts"].items() if n == 0]
    if empty:
        out.append(f"Groups without held-out prompts (not evaluated): {', '.join(empty)}.")
    out.append(
        f"Caveat: at most {s['prompts_per_group']} prompts x {s['samples_per_prompt']} samples per "
        "group and policy; intervals resample whole prompts and are per policy, so overlapping "
        "intervals do not show that policies are equal, only that this evaluation cannot separate "
        "them.")
    return out


def _curve_source(results: dict) -> str:
    src = results.get("curve_source") or {}
    judged = sorted(a for a, v in src.items() if v == "judge")
    trained = sorted(a for a, v in src.items() if v != "judge")
    out = []
    if judged:
        out.append(f"For {', '.join(judged)} both read the judge on held-out validation prompts "
                   "during training (policy.judge_every).")
    if trained:
        out.append(f"For {', '.join(trained)} both read the training reward on training batches "
                   "(metrics.jsonl), which a hacked reward model can inflate: set "
                   "policy.judge_every to read the judge instead.")
    return " ".join(out)


def _interval(r: dict, key: str, lo: str, hi: str, signed: bool = False) -> str:
    if r.get(key) is None:
        return "–"
    return f"{fmt(r[key], signed=signed)} [{fmt(r.get(lo), signed=signed)}, {fmt(r.get(hi), signed=signed)}]"


def signal_section(results: dict) -> list[str]:
    """The reward-signal check (pgrpo.stages.evaluation.reward_check): a table per group and its warnings."""
    check = results.get("reward_check")
    if not check:
        return []
    from pgrpo.stages.evaluation.reward_check import warnings

    ests = check["estimators"]
    lines = ["## Training reward vs the judge (reward-signal check)", "",
             f"On the base policy's test samples, the training reward (`{results['training_reward']}`) "
             "against the judge. Within-prompt: mean over prompts of the rank correlation among one "
             "prompt's completions (what every estimator learns from). Between-prompt share: the "
             "part of the reward's variance that lies between prompts (P-GRPO keeps it as a "
             "per-prompt offset, GRPO removes it). Advantage correlation: rank correlation of each "
             "estimator's advantage with the judge's within-prompt contrast, pooled over the group.",
             ""]
    lines += _table(["group", "within-prompt corr", "between-prompt share (reward)",
                     "between-prompt share (judge)", *[f"adv corr {e}" for e in ests]],
                    [[g, fmt(v["within_corr"], 2), fmt(v["between_share"], 2),
                      fmt(v["judge_between_share"], 2), *[fmt(v[f"adv_corr/{e}"], 2) for e in ests]]
                     for g, v in check["groups"].items()])
    lines += [""] + [f"- **Warning**: {w}" for w in warnings(check, results["training_reward"])]
    return lines + [""]


def group_checks_section(results: dict) -> list[str]:
    """Before training: each group's held-out pairs under its own reward head and the others'
    (pgrpo.stages.reward.group_checks), and what that rules out."""
    checks = results.get("group_checks")
    if not checks:
        return []
    from pgrpo.stages.reward.group_checks import verdicts

    lines = ["## Before training: do the groups differ, and can each be learned?", "",
             "The reward model on held-out users' pairs. Own accuracy: share of a group's pairs "
             "its own head orders as its users did (0.5 = chance). Disagreement: own accuracy "
             "minus the mean accuracy under the other groups' heads (above 0: the group chooses "
             "differently from the others, which is what per-group conditioning can use; a head "
             "trained on few pairs is noisier, which lowers it for small groups). "
             "Intervals: bootstrap over the group's users.", ""]
    lines += _table(["group", "users", "pairs", "own accuracy [CI]", "other heads",
                     "disagreement [CI]"],
                    [[g, str(c["users"]), str(c["pairs"]),
                      f"{fmt(c['own_accuracy'])} [{fmt(c['own_accuracy_ci'][0])}, "
                      f"{fmt(c['own_accuracy_ci'][1])}]", fmt(c["other_heads_accuracy"]),
                      f"{fmt(c['disagreement'], signed=True)} "
                      f"[{fmt(c['disagreement_ci'][0], signed=True)}, "
                      f"{fmt(c['disagreement_ci'][1], signed=True)}]"]
                     for g, c in checks.items()])
    v = verdicts(checks)
    lines.append("")
    if v["not_learnable"]:
        lines.append(f"- **Cannot be learned from this data**: {', '.join(v['not_learnable'])}: the "
                     "reward model orders these groups' held-out choices no better than chance "
                     "(interval reaches 0.5), so no result below can serve them through it.")
    if v["not_distinct"]:
        lines.append(f"- **Not distinct**: {', '.join(v['not_distinct'])}: the other groups' heads "
                     "predict these groups' choices as well as their own (interval reaches 0); "
                     "per-group conditioning has nothing to use for them here.")
    if not (v["not_learnable"] or v["not_distinct"]):
        lines.append("- Every group is learned above chance and differs from the others.")
    return lines + [""]


def helps_section(results: dict) -> list[str]:
    """Does training help the users? Each algorithm under the rule of pgrpo.stages.evaluation.metrics.helps_users."""
    limit = results["settings"].get("kl_limit")
    rows = []
    for alg, r in results["algorithms"].items():
        h = r.get("helps")
        if not h:
            continue
        rows.append([alg, f"**{h['verdict']}**",
                     _interval(r, "gain_vs_base", "gain_ci_low", "gain_ci_high", signed=True),
                     f"{fmt(r['kl_to_base'], 3)} ({'<' if h['kl_below_limit'] else '≥'} {limit})",
                     ", ".join(h["harmed_groups"]) or "none"])
    if not rows:
        return []
    return ["## Does training help the users?", "",
            f"Rule, fixed before the run: **helps** = the paired gain interval lies above 0, KL to "
            f"the base is below {limit} nats/token and no group is harmed (the policy's interval "
            "for the group lies wholly below the base's mean for it); **harms** = the gain "
            "interval lies below 0 or a group is harmed; otherwise **unresolved**.", "",
            *_table(["policy", "verdict", "gain vs base [paired CI]", "KL to base",
                     "groups harmed"], rows), ""]


def render_report(results: dict) -> str:
    s, sizes = results["settings"], results["groups"]
    pols = {"base": results["base"], **results["algorithms"]}
    key, pct = s["steps_key"], s["steps_key"].rsplit("_", 1)[-1]
    score = (f"judge reward ({results['judge']})" if results["judge"] != "none" else
             "learned reward. This data has no judge (file source), so every reward below is the "
             "reward model's own score and cannot reveal reward hacking")
    role = s.get("report_prompts", "test")
    intro = ("**Tuning report: every number below is on the validation prompts "
             "(evaluate.report_prompts: val), which chose the knobs; it is not a result.** "
             if role == "val" else "")
    intro += (f"Base model `{s['model']}`; {len(results['algorithms'])} trained algorithm(s). "
              f"Score: {score}. Held-out {'validation' if role == 'val' else 'test'} prompts "
              f"(split = eval): up to {s['prompts_per_group']} per "
              f"group, {s['samples_per_prompt']} samples each, temperature {s['temperature']}, at "
              f"most {s['max_new_tokens']} new tokens, seed {s['seed']}; the same prompts and "
              f"sampling seeds for every policy. Intervals: {round(s['ci_level'] * 100)}% bootstrap "
              f"over prompts ({s['n_boot']} resamples).")
    headline_note = (
        f"Mean reward: unweighted mean over groups. Minority-majority gap: the majority group "
        f"({results['majority_group']}) minus the mean of the other groups (positive = minorities "
        "served worse). Neutral log-lik Δ: mean token log-likelihood of fixed non-personalized "
        "text minus the base model's (negative = forgetting).")
    details_note = (
        "Win rate: share of paired samples (same prompt, same seed) that beat the base, ties 0.5. "
        "Learned-vs-judge gap: gain over the base under the reward model minus gain under the "
        "judge, each in SD units of that score (positive = the reward model is more impressed "
        "than the user: reward hacking shows here).")
    gain_note = (
        " Intervals of the mean and of the gain resample prompts within each group (the gain "
        "pairs each sample with the base's sample of the same prompt and seed); a gain interval "
        "above 0 means the policy beats the base on these prompts.")
    efficiency_note = (
        f"Steps to {pct}%: first training step at which the running mean (window "
        f"{s['smooth_window']}) of the group's batch reward reaches {pct}% of its gain from the "
        "first step to the end; – = the curve did not improve. AUC: mean reward over the run "
        "(trapezoid / steps). " + _curve_source(results))

    lines = ["# Evaluation report", "", intro, ""]
    if results.get("training_reward") == "judge":
        lines += ["**The judge was also the training reward** (`policy.reward: judge`): a "
                  "controlled experiment. These numbers measure how well each algorithm optimizes "
                  "a known reward, not how well a learned reward model stands in for users.", ""]
    # The checks first: a group they rule out is named before any training result.
    lines += group_checks_section(results)
    lines += signal_section(results)
    lines += ["## Headline", ""]
    lines += _table(
        ["policy", "mean reward [CI]", "gain vs base [paired CI]", "worst group",
         "minority-majority gap", "win rate vs base", "KL to base (nats/token)",
         "neutral log-lik Δ"],
        [[n, _interval(r, "mean_reward", "mean_ci_low", "mean_ci_high"),
          _interval(r, "gain_vs_base", "gain_ci_low", "gain_ci_high", signed=True),
          f"{r['worst_group'] or '–'} ({fmt(r['worst_group_reward'])})",
          fmt(r["minority_majority_gap"], signed=True), fmt(r["win_rate"]),
          fmt(r["kl_to_base"], 4), fmt(r["neutral_loglik_delta"], 4, signed=True)]
         for n, r in pols.items()])
    lines += ["", headline_note + gain_note, ""]
    lines += helps_section(results)
    if results.get("champion"):
        by = results["champion_by"]
        where = (f"the mean reward on {sum(results['val_prompts'].values())} validation prompts "
                 "that no number above uses" if by == "val_mean_reward" else
                 "the test numbers above (no validation prompts were set aside, so the champion's "
                 "numbers are biased upward)")
        lines += [f"Champion (MLflow alias `champion`): **{results['champion']}**, picked by {where}.",
                  ""]
    lines += ["## Reward per group", ""]
    lines += _table(["group", "users", "eval prompts", *pols],
                    [[g, str(n), str(results["eval_prompts"].get(g, 0)),
                      *[ci(r["groups"][g]) for r in pols.values()]] for g, n in sizes.items()])
    lines += ["", "## Per-group details", "", details_note, ""]
    rows = [[g, n, ci(x), fmt(x["win_rate"]), fmt(x["learned_reward"]),
             fmt(x["reward_gap"], signed=True), fmt(x.get(key)), fmt(x.get("auc"))]
            for g in sizes for n, r in results["algorithms"].items() for x in [r["groups"][g]]]
    lines += _table(["group", "algorithm", "reward [CI]", "win rate", "learned reward",
                     "learned-vs-judge gap", f"steps to {pct}%", "AUC"], rows, left=2)
    lines += ["", efficiency_note, "", "## Figures", "",
              "![Per-group training reward](figures/group_rewards.png)", "",
              "![Final per-group reward](figures/final_rewards.png)", "", "## Reading", ""]
    lines += [f"- {t}" for t in reading(results)]
    return "\n".join(lines) + "\n"
