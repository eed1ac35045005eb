"""Across-seed summary of a comparison: means with t-intervals, paired differences, claims.

    from pgrpo.experiments.compare_summary import summarize_runs, render_comparison
    summary = summarize_runs({"seed0": m0, "seed1": m1, "seed2": m2}, reference="grpo")
    text = render_comparison(summary)

Input: one evaluate metrics.json dict per run (a seed, or a DVC experiment), every run
with the same groups and algorithms, evaluated on the same held-out prompts with the
same sampling seeds (evaluate.seed). So per run, algorithms are paired: the difference
a - reference is taken within a run, then averaged over runs with a Student-t interval
(df = runs - 1). That interval covers training randomness (the seeds), not the choice
of held-out prompts, which every run shares: it says whether the difference would hold
for another training seed on this evaluation set.

Claims checked (those whose algorithms are present), each judged by one rule
(pgrpo.stages.evaluation.metrics.interval_verdict): "supported" when the interval of the
difference lies above 0, "contradicted" below 0, "equivalent" inside (-margin, margin)
(the comparison's equivalence margin, in judge reward; the neutral log-likelihood has
none), else "not resolved". The primary endpoints, fixed before the pre-registered runs
(benchmarks/llm_compare/README.md): the mean over groups, the minority groups and the
judge AUC on validation prompts; the mean's verdict is the comparison's answer.
The convergence claim reads the judge's curves on validation prompts (policy.judge_every
> 0, pgrpo.stages.evaluation.judge_curve); where any run has only the learned reward's curve on its
training batches, which a policy can raise by hacking the reward, it is "not judged":
    method - reference   mean reward over groups, minority groups, worst group, and the
                         area under the per-group training curve (convergence speed)
    method - ablation    mean reward over groups (random labels should remove the gain)
    method - reference   neutral-text log-likelihood (general capability kept)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from pgrpo.stages.evaluation.metrics import interval_verdict, seeds_to_resolve, t_interval
from pgrpo.stages.evaluation.report import markdown_table

# Per-policy headline numbers of metrics.json, averaged over runs.
HEADLINE = ("mean_reward", "worst_group_reward", "minority_reward", "majority_reward",
            "minority_majority_gap", "win_rate", "kl_to_base", "neutral_loglik_delta", "auc")


def _num(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _check_runs(runs: Mapping[str, dict]) -> tuple[dict, list[str]]:
    """The groups (sizes) and algorithms every run shares; an error naming the odd run."""
    if not runs:
        raise ValueError("no runs to summarize")
    first_name, first = next(iter(runs.items()))
    sizes, algs = first["groups"], list(first["algorithms"])
    sizes = {g: sizes[g] for g in sorted(sizes, key=lambda g: (-sizes[g], g))}  # majority first
    for name, m in runs.items():
        if dict(m["groups"]) != sizes:
            raise ValueError(f"run {name!r} has groups {m['groups']}, run {first_name!r} has "
                             f"{sizes}: runs of a comparison must share their data")
        if sorted(m["algorithms"]) != sorted(algs):
            raise ValueError(f"run {name!r} has algorithms {sorted(m['algorithms'])}, run "
                             f"{first_name!r} has {sorted(algs)}")
        if m["settings"].get("seed") != first["settings"].get("seed"):
            raise ValueError(f"run {name!r} was evaluated with evaluate.seed "
                             f"{m['settings'].get('seed')}, run {first_name!r} with "
                             f"{first['settings'].get('seed')}: the runs are not paired")
    return sizes, algs


def run_headline(policy: dict, majority: str, steps_key: str | None = None) -> dict:
    """One policy of one run: metrics.json's headline plus minority / majority means and
    the mean (over groups) area under the training curve."""
    groups = policy["groups"]
    rewards = {g: r["reward"] for g, r in groups.items() if r.get("reward") is not None}
    minority = [v for g, v in rewards.items() if g != majority]
    aucs = [r["auc"] for r in groups.values() if r.get("auc") is not None]
    return {**{k: _num(policy.get(k)) for k in HEADLINE},
            "minority_reward": float(np.mean(minority)) if minority else None,
            "majority_reward": rewards.get(majority),
            "auc": float(np.mean(aucs)) if aucs else None}


def _interval(values: list, level: float) -> dict:
    """{mean, ci_low, ci_high, n} of the non-missing values (missing ones counted apart)."""
    x = [v for v in values if v is not None]
    mean, lo, hi = t_interval(x, level) if x else (math.nan,) * 3
    return {"mean": _num(mean), "ci_low": _num(lo), "ci_high": _num(hi), "n": len(x),
            "missing": len(values) - len(x)}


NOT_JUDGED = "not judged (no judge curve: set policy.judge_every)"


def curve_sources(runs: Mapping[str, dict]) -> dict[str, str]:
    """Per algorithm, what its convergence numbers read in every run: "judge" (held-out
    validation prompts) or "training reward" (the learned reward on training batches; also
    what a run before curve_source existed reports)."""
    algs = next(iter(runs.values()))["algorithms"]
    return {a: "judge" if all((m.get("curve_source") or {}).get(a) == "judge"
                              for m in runs.values()) else "training reward" for a in algs}


def helps_by_run(runs: Mapping[str, dict], algs: list[str]) -> dict:
    """Per algorithm, each run's verdict on its users (pgrpo.stages.evaluation.metrics.helps_users, which
    evaluate wrote into metrics.json): a default must help at every seed, not on average.
    A run evaluated before the verdict existed has verdict None and is not counted."""
    out = {}
    for a in algs:
        rows = []
        for name, m in runs.items():
            pol = m["algorithms"][a]
            helps = pol.get("helps") or {}
            rows.append({"run": name, "gain": _num(pol.get("gain_vs_base")),
                         "ci_low": _num(pol.get("gain_ci_low")),
                         "ci_high": _num(pol.get("gain_ci_high")),
                         "kl_to_base": _num(pol.get("kl_to_base")),
                         "verdict": helps.get("verdict"),
                         "harmed_groups": list(helps.get("harmed_groups") or [])})
        judged = [r for r in rows if r["verdict"] is not None]
        out[a] = {"per_run": rows, "n_judged": len(judged),
                  "helps_in": sum(r["verdict"] == "helps" for r in judged)}
    return out


def verdict(diff: dict, margin: float | None = None) -> str:
    return interval_verdict(diff["ci_low"], diff["ci_high"], margin)


def summarize_runs(runs: Mapping[str, dict], reference: str = "grpo", method: str = "pgrpo",
                   ablation: str = "pgrpo_random", level: float = 0.95,
                   margin: float | None = None) -> dict:
    """The comparison summary (reports/compare/summary.json) of per-run metrics.json dicts."""
    sizes, algs = _check_runs(runs)
    first = next(iter(runs.values()))
    majority, key = first["majority_group"], first["settings"]["steps_key"]
    policies = {"base": [m["base"] for m in runs.values()],
                **{a: [m["algorithms"][a] for m in runs.values()] for a in algs}}
    heads = {p: [run_headline(r, majority) for r in rs] for p, rs in policies.items()}
    out_pol = {}
    for p, rs in policies.items():
        groups = {}
        for g in sizes:
            entry = {"reward": _interval([_num(r["groups"][g]["reward"]) for r in rs], level)}
            if p != "base":
                for k in (key, "auc", "win_rate"):
                    entry[k] = _interval([_num(r["groups"][g].get(k)) for r in rs], level)
            entry["per_run"] = [_num(r["groups"][g]["reward"]) for r in rs]
            groups[g] = entry
        out_pol[p] = {"groups": groups,
                      **{k: _interval([h[k] for h in heads[p]], level) for k in HEADLINE}}

    def paired_values(a: str, b: str, k: str) -> list[float | None]:
        return [None if x[k] is None or y[k] is None else x[k] - y[k]
                for x, y in zip(heads[a], heads[b])]

    def paired(a: str, b: str, k: str) -> dict:
        return _interval(paired_values(a, b, k), level)

    def paired_group(a: str, b: str, g: str) -> dict:
        xs = [_num(r["groups"][g]["reward"]) for r in policies[a]]
        ys = [_num(r["groups"][g]["reward"]) for r in policies[b]]
        return _interval([None if x is None or y is None else x - y for x, y in zip(xs, ys)],
                         level)

    diffs = {}
    for a in algs:
        for b in [reference] + ([method] if a == ablation else []):
            if a != b and b in algs:
                diffs[f"{a} - {b}"] = {
                    **{k: paired(a, b, k) for k in HEADLINE},
                    "groups": {g: paired_group(a, b, g) for g in sizes}}
    claims = []
    sources = curve_sources(runs)

    def claim(text: str, a: str, b: str, k: str, primary: bool = False,
              in_reward: bool = True) -> None:
        """in_reward: the metric is in judge reward, so the margin applies."""
        if a in algs and b in algs and a != b:
            raw = paired_values(a, b, k)
            d, values = _interval(raw, level), [v for v in raw if v is not None]
            m = margin if in_reward else None
            judged = k != "auc" or sources.get(a) == sources.get(b) == "judge"
            claims.append({"claim": text, "difference": f"{a} - {b}", "metric": k, **d,
                           "primary": primary, "margin": m,
                           "verdict": verdict(d, m) if judged else NOT_JUDGED,
                           "seeds_to_resolve": seeds_to_resolve(values, level, margin=m)})

    claim(f"{method} reaches a higher judge reward than {reference} (mean over groups)",
          method, reference, "mean_reward", primary=True)
    claim(f"{method} helps the minority groups more: higher reward than {reference} in the "
          "minority groups (mean)", method, reference, "minority_reward", primary=True)
    claim(f"{method} converges faster than {reference} (larger area under the per-group "
          "judge curve on validation prompts)", method, reference, "auc", primary=True)
    claim(f"{method} lifts the worst group above {reference}'s", method, reference,
          "worst_group_reward")
    claim(f"random groups remove the gain: {method} beats {ablation}", method, ablation,
          "mean_reward")
    claim(f"{method} keeps general capability at least as well as {reference} (neutral-text "
          "log-likelihood; 'contradicted' = a loss)", method, reference, "neutral_loglik_delta",
          in_reward=False)
    answer = next((c["verdict"] for c in claims if c["metric"] == "mean_reward"
                   and c["difference"] == f"{method} - {reference}"), None)
    return {"runs": list(runs), "n_runs": len(runs), "level": level, "margin": margin,
            "answer": answer, "groups": sizes,
            "majority_group": majority, "steps_key": key, "reference": reference,
            "method": method, "ablation": ablation, "judge": first["judge"],
            "settings": first["settings"], "curve_source": sources, "policies": out_pol,
            "helps_users": helps_by_run(runs, algs),
            "differences": diffs, "claims": claims}


def gains_over_base(summary: dict) -> dict[str, dict[str, dict]]:
    """{"<policy> - base": {group: {mean, ci_low, ci_high, n, missing}}}: each trained policy's
    per-group gain over the base model, paired within a run, with the summary's t-interval
    over runs (from the per-run group rewards the summary keeps)."""
    policies, level = summary["policies"], summary["level"]
    base = policies["base"]["groups"]
    return {f"{p} - base": {
        g: _interval([None if x is None or b is None else x - b
                      for x, b in zip(v["groups"][g]["per_run"], base[g]["per_run"])], level)
        for g in summary["groups"]} for p, v in policies.items() if p != "base"}


# ------------------------------------------------------------------ markdown

def _f(x, digits: int = 3, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ci(d: dict, digits: int = 3, signed: bool = False) -> str:
    if d["mean"] is None:
        return "–"
    text = _f(d["mean"], digits, signed)
    if d["ci_low"] is not None:
        text += f" [{_f(d['ci_low'], digits, signed)}, {_f(d['ci_high'], digits, signed)}]"
    return text + (f" ({d['n']}/{d['n'] + d['missing']})" if d["missing"] else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [*markdown_table(header, rows), ""]


def _seeds(claim: dict) -> str:
    if claim["n"] < 2 or claim["verdict"] == NOT_JUDGED:
        return "–"  # no spread over seeds to plan with, or nothing to resolve
    n = claim.get("seeds_to_resolve")
    return "> 100" if n is None else str(n)


def _sources_text(sources: dict[str, str]) -> str:
    what = {"judge": "the judge on held-out validation prompts",
            "training reward": "the learned reward on training batches (hackable: no verdict)"}
    kinds = set(sources.values())
    if len(kinds) == 1:
        return what[kinds.pop()]
    return "; ".join(f"{a}: {what[k]}" for a, k in sources.items())


def _helps_section(helps: dict) -> list[str]:
    """Run by run: does each algorithm help the users (gain interval above 0, KL under the
    limit, no group harmed)? Empty when no run carries the verdict."""
    if not any(h["n_judged"] for h in helps.values()):
        return []
    lines = ["## Does training help the users? Run by run", "",
             ", ".join(f"{a} helps in {h['helps_in']} of {h['n_judged']} runs"
                       for a, h in helps.items()) + (
                 " (helps: the paired gain interval over the base lies above 0, KL to the base "
                 "is under evaluate.kl_limit and no group is harmed, i.e. lies wholly below the "
                 "base's mean for it; pgrpo.stages.evaluation.metrics.helps_users)."), ""]
    rows = [[a, r["run"], _ci({"mean": r["gain"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                               "missing": 0}, signed=True),
             _f(r["kl_to_base"], 4), f"**{r['verdict']}**" if r["verdict"] else "–",
             ", ".join(r["harmed_groups"]) or "none"]
            for a, h in helps.items() for r in h["per_run"]]
    return lines + _table(["policy", "run", "gain vs base [paired CI]", "KL to base", "verdict",
                           "groups harmed"], rows)


def render_comparison(s: dict) -> str:
    pols, sizes, pct = s["policies"], s["groups"], round(s["level"] * 100)
    key = s["steps_key"]
    names = list(pols)
    lines = [f"# Comparison over {s['n_runs']} runs ({', '.join(s['runs'])})", "",
             (f"Each run trains every algorithm on the same data with its own seed; every policy "
             f"is judged on the same held-out prompts ({s['judge']} judge). Numbers are means "
             f"over runs with {pct}% Student-t intervals (df = {s['n_runs'] - 1}); differences "
             "are paired within a run. The intervals cover training randomness, not the choice "
             "of held-out prompts."), "", "## The claims", ""]
    margin = s.get("margin")
    if s.get("answer"):
        lines += [f"**The answer ({s['method']} - {s['reference']}, mean judge reward over "
                  f"groups): {s['answer']}**" + (f" (equivalence margin ±{margin})" if margin
                                                 else ""), ""]
    lines += _table(["claim", "difference", "estimate [CI]", "verdict",
                     "seeds that would decide it*"],
                    [[("(primary) " if c.get("primary") else "") + c["claim"],
                      f"{c['difference']} ({c['metric']})", _ci(c, signed=True),
                      f"**{c['verdict']}**", _seeds(c)]
                     for c in s["claims"]])
    decide = (f"exclude 0 or lie inside ±{margin} (the equivalence margin)" if margin
              else "exclude 0")
    lines += [("\\* if the estimate and its spread over seeds held: the smallest number of seeds "
               f"whose {pct}% interval would {decide} (a planning number, not a result; "
               "'> 100' = the estimate is too small against its spread). Verdicts: supported / "
               "contradicted = the interval lies above / below 0; equivalent = inside the "
               "margin; else not resolved (pgrpo.stages.evaluation.metrics.interval_verdict)."),
              ""]
    lines += _helps_section(s.get("helps_users") or {})
    lines += ["## Headline", ""]
    rows = [[p, *(_ci(pols[p][k]) for k in ("mean_reward", "minority_reward",
                                             "majority_reward", "worst_group_reward")),
             _ci(pols[p]["kl_to_base"], 4), _ci(pols[p]["neutral_loglik_delta"], 4, True)]
            for p in names]
    lines += _table(["policy", "mean over groups", "minority groups", (f"majority "
                     f"({s['majority_group']})"), "worst group", "KL to base",
                     "neutral log-lik vs base"], rows)
    lines += ["## Final judge reward per group", ""]
    lines += _table(["group (users)", *names],
                    [[f"{g} ({n})", *(_ci(pols[p]["groups"][g]["reward"]) for p in names)]
                     for g, n in sizes.items()])
    lines += [f"## Differences per group (paired within runs, {pct}% CI)", ""]
    diffs = s["differences"]
    lines += _table(["group", *diffs],
                    [[g, *(_ci(d["groups"][g], signed=True) for d in diffs.values())]
                     for g in sizes])
    algs = [p for p in names if p != "base"]
    lines += [(f"## Convergence: {key} (step reaching {key.rsplit('_', 1)[-1]}% of the training "
              "reward gain) / area under the training curve"), "",
              (f"Curves read: {_sources_text(s.get('curve_source') or {})}. (k/n): the step was "
              "defined in k of n runs (a group without gain or without batches has none)."), ""]
    lines += _table(["group", *algs],
                    [[g, *(f"{_ci(pols[a]['groups'][g][key], 1)} / "
                           f"{_ci(pols[a]['groups'][g]['auc'])}" for a in algs)] for g in sizes])
    lines += ["## Figures", "", "![final per-group reward](figures/final_rewards.png)", "",
              "![gain over the base per group](figures/gains_over_base.png)", "",
              "![differences](figures/differences.png)", "",
              "![training curves, mean over runs](figures/group_rewards.png)", ""]
    return "\n".join(lines)
