"""The README's answer to issue 25, rendered from the pre-registered comparison's summaries.

    python benchmarks/llm_compare/answer.py                  # from the repo root (or ../claim)
    python benchmarks/llm_compare/answer.py --out answer.md  # the same, written to a file
    python benchmarks/llm_compare/answer.py --task movielens # benchmarks/movielens_compare/

Reads `reports/compare/<name>/summary.json` of each preset of the task (llm:
configs/claim_judge.yaml, configs/claim.yaml; movielens: configs/claim_movielens_judge.yaml,
configs/claim_movielens.yaml; what `claim.sh` writes at its end) and prints one markdown section:
a table per reward of every endpoint's estimate, interval and verdict, the run-by-run
"helps" counts, and the paragraph a user can act on. That paragraph follows the mapping
fixed in the pre-registration (benchmarks/llm_compare/README.md, "Pre-registered"), coded
here before the comparison's results were read (USE below), so the wording cannot be chosen
after the numbers. A summary over fewer seeds than its preset registers is rendered with a
warning and no paragraph: a partial result is not the answer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgrpo.experiments.compare import load_compare, reports_root
from pgrpo.experiments.compare_summary import _ci  # the report's interval format, "+x [+lo, +hi]"

# Per task: its title and (preset, what the training reward is), the judge first: the clean
# test of the estimator. The MovieLens pair was added with its pre-registration, before its runs.
TASKS = {
    "llm": ("",  # issue 25's: the README's heading as first written, no task named
            (("configs/claim_judge.yaml", ("the judge as training reward (the clean test of the "
              "estimator: no reward model to hack)")),
             ("configs/claim.yaml", ("the learned reward model (the product's default, what "
              "`make run` trains on)")))),
    "movielens": ("MovieLens 100K, the paper's task on real ratings",
                  (("configs/claim_movielens_judge.yaml", ("the judge as training reward (each "
                    "training user's own held-out liked movies: the clean test of the estimator)")),
                   ("configs/claim_movielens.yaml", ("the learned reward model (per group, from "
                    "pairs of later liked vs disliked movies: the product's pipeline)"))))}

# Endpoints in the order of the pre-registration: (metric, difference kind, label, primary)
ENDPOINTS = (("mean_reward", "reference", "mean judge reward over groups (the answer)", True),
             ("minority_reward", "reference", "minority groups' mean judge reward", True),
             ("auc", "reference", "judge AUC on validation prompts (convergence)", True),
             ("worst_group_reward", "reference", "worst group's judge reward", False),
             ("mean_reward", "ablation", "against random groups (is the grouping what differs?)",
              False),
             ("neutral_loglik_delta", "reference", "neutral-text log-likelihood (no margin)",
              False))

# The pre-registered mapping from the answer (endpoint 1's verdict) to what a user should do.
USE = {"supported": "use P-GRPO: it reaches a higher mean judge reward than GRPO",
       "contradicted": "use GRPO: P-GRPO reaches a lower mean judge reward",
       "equivalent": "either one: no difference at this scale, within ±{margin} judge reward",
       "not resolved": ("no answer yet: the interval covers 0 and reaches past ±{margin}; "
                        "{seeds} paired seeds would decide it if the estimate and its spread "
                        "held")}

# What the random-groups ablation says about why, by its verdict (secondary endpoint).
WHY = {"supported": "random group labels lose P-GRPO's advantage, so the grouping is what differs",
       "contradicted": "random group labels do better than the real ones, so the grouping is not "
                       "what helps",
       "equivalent": "random group labels do as well as the real ones (within ±{margin}), so "
                     "whatever differs is not the grouping",
       "not resolved": "the ablation cannot tell whether the grouping matters"}


def _other(summary: dict, kind: str) -> str:
    """What the method is compared with: the reference (GRPO) or the ablation."""
    return summary["reference"] if kind == "reference" else summary["ablation"]


def _claim(summary: dict, metric: str, kind: str) -> dict | None:
    want = f"{summary['method']} - {_other(summary, kind)}"
    return next((c for c in summary["claims"]
                 if c["metric"] == metric and c["difference"] == want), None)


def _cell(claim: dict | None) -> tuple[str, str, str]:
    if claim is None:
        return "–", "not run", "–"
    seeds = claim.get("seeds_to_resolve")
    return (_ci(claim, signed=True), f"**{claim['verdict']}**",
            "–" if claim["verdict"] != "not resolved" else ("> 100" if seeds is None
                                                              else str(seeds)))


def load(preset: str) -> tuple[dict, list[int]]:
    """The summary of a preset's comparison and its registered seeds; a clear error
    when the comparison has not been summarized."""
    cfg = load_compare(preset)
    path = reports_root(cfg.name) / "summary.json"
    if not path.is_file():
        raise SystemExit(f"answer.py: no {path} here ({Path.cwd()}): run "
                         f"`PRESETS={preset} bash benchmarks/llm_compare/claim.sh` first (its last "
                         "step writes it)")
    return json.loads(path.read_text()), list(cfg.seeds)


def complete(summary: dict, seeds: list[int]) -> bool:
    return sorted(summary["runs"]) == sorted(f"seed{s}" for s in seeds)


def render(summaries: list[tuple[str, dict, list[int]]], task: str = "") -> str:
    """summaries: (what the reward is, summary.json, registered seeds), one per reward; task:
    what was learned, named in the title when given."""
    lines = [f"### P-GRPO against GRPO{' on ' + task if task else ''}: the pre-registered answer", ""]
    for what, s, seeds in summaries:
        n, margin = s["n_runs"], s.get("margin")
        lines += [(f"**With {what}** ({n} of {len(seeds)} registered seeds; "
                  f"{round(s['level'] * 100)} % t-intervals, paired within a seed; equivalence "
                  f"margin ±{margin}):"), ""]
        if not complete(s, seeds):
            lines += [(f"> Partial: {n} of the {len(seeds)} registered seeds "
                      f"({', '.join(s['runs'])}). Not the pre-registered result; no verdict "
                      "below is the answer yet."), ""]
        lines += ["| endpoint | P-GRPO minus | estimate [95 % CI] | verdict | seeds to decide* |",
                  "|---|---|---|---|---:|"]
        for metric, kind, label, primary in ENDPOINTS:
            est, verdict, need = _cell(_claim(s, metric, kind))
            lines.append(f"| {'(primary) ' if primary else ''}{label} | {_other(s, kind)} | {est} | "
                         f"{verdict} | {need} |")
        helps = s.get("helps_users") or {}
        if any(h["n_judged"] for h in helps.values()):
            lines += ["", "Training helps the users (the report's run-by-run rule) in: " + ", ".join(
                f"{a} {h['helps_in']} of {h['n_judged']} runs" for a, h in helps.items()) + "."]
        lines.append("")
    lines += [("\\* if the estimate and its spread over seeds held (a planning number). The answer "
              "is endpoint 1's verdict; the other primary endpoints stand as they fall, without a "
              "correction for multiplicity (six primary verdicts at 95 %: one of them alone is "
              "not read as a finding)."), "",
              "**What to use.**"]
    if not all(complete(s, seeds) for _, s, seeds in summaries):
        return "\n".join(lines + ["Not yet: the comparison has not run all its seeds.", ""])
    sentences = []
    for what, s, _ in summaries:
        main = _claim(s, "mean_reward", "reference")
        ablation = _claim(s, "mean_reward", "ablation")
        fill = {"margin": s.get("margin"),
                "seeds": main.get("seeds_to_resolve") or "more than 100"}
        text = f"With {what}: {USE[main['verdict']].format(**fill)}"
        if ablation is not None:
            text += f"; {WHY[ablation['verdict']].format(**fill)}"
        sentences.append(text + ".")
    return "\n".join(lines + [" ".join(sentences), ""])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the section here instead of stdout")
    ap.add_argument("--task", choices=sorted(TASKS), default="llm",
                    help="which pre-registered comparison (default: llm, issue 25's)")
    args = ap.parse_args(argv)
    title, presets = TASKS[args.task]
    summaries = []
    for preset, what in presets:
        summary, seeds = load(preset)
        summaries.append((what, summary, seeds))
    text = render(summaries, title)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
