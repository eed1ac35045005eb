"""Cells of the mechanism experiment -> paired intervals, verdicts, report.md, figures, JSON.

    from pgrpo.experiments.mechanism_report import summarize, write_report
    summary = summarize(results, cfg)          # results: pgrpo.experiments.mechanism.run_grid's list
    write_report(summary, cfg)                 # reports/mechanism/{report.md, summary.json, *.png}

Per cell and group: the judge reward at the last evaluation ("final") and the area under
the judge-reward curve over the evaluations (pgrpo.stages.evaluation.metrics.curve_auc: the mean reward over
training, so larger = faster). A cell's headline is the mean over groups (every group
weighs the same: the claim is about minorities too). Differences are paired: estimator
minus reference within a seed (same prompts, offsets and sampling seeds), then a Student-t
interval over the seeds (pgrpo.stages.evaluation.metrics.t_interval, df = seeds - 1).

The verdict rule (fixed before the full grid ran; `verdict` below, tested on hand-made
intervals), for a claim "A > B" with the interval [lo, hi] of the paired difference A - B:
    supported    lo > 0                       (A beats B at the 95 % level)
    refuted      hi < 0                       (B beats A), or
                 -margin < lo and hi < margin (equivalent: no difference as large as margin)
    unresolved   otherwise (the interval reaches past the margin and covers 0)
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from pgrpo.experiments.mechanism import cells
from pgrpo.experiments.mechanism_config import MechanismConfig
from pgrpo.stages.evaluation.metrics import curve_auc, interval_verdict, t_interval
from pgrpo.stages.evaluation.report import markdown_table

# (claim id, text, A, B, metric): the paper's three claims, then ours (beyond the paper).
CLAIMS = [
    ("higher_final", "P-GRPO reaches a higher judge reward than GRPO", "pgrpo", "{ref}", "final"),
    ("faster", "P-GRPO converges faster than GRPO (larger judge AUC)", "pgrpo", "{ref}", "auc"),
    ("random_loses_gain", "random group labels lose the gain (P-GRPO beats P-GRPO with random groups)",
     "pgrpo", "pgrpo_random", "final"),
    ("scale_higher_final", "beyond the paper: pgrpo_scale reaches a higher judge reward than GRPO",
     "pgrpo_scale", "{ref}", "final"),
    ("scale_faster", "beyond the paper: pgrpo_scale converges faster than GRPO",
     "pgrpo_scale", "{ref}", "auc"),
]


def verdict(lo: float | None, hi: float | None, margin: float) -> str:
    """supported / refuted / unresolved for the claim "difference > 0" (module docstring):
    pgrpo.stages.evaluation.metrics.interval_verdict, with "refuted" for both of its
    "contradicted" and "equivalent"."""
    word = interval_verdict(lo, hi, margin)
    return {"contradicted": "refuted", "equivalent": "refuted", "not resolved": "unresolved"
            }.get(word, word)


def cell_metrics(result: dict) -> dict:
    """final / auc per group and their means over groups (and over the minorities)."""
    steps, judge = result["eval_steps"], result["judge"]
    groups = list(judge)
    final = {g: judge[g][-1] for g in groups}
    auc = {g: curve_auc(steps, judge[g]) for g in groups}
    return {"final": final, "auc": auc, "final_mean": float(np.mean(list(final.values()))),
            "auc_mean": float(np.mean(list(auc.values()))),
            "final_minority": float(np.mean([final[g] for g in groups[1:]]))}


def _ci(values: list[float], level: float) -> dict:
    mean, lo, hi = t_interval(values, level)
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(values)}


def summarize(results: list[dict], cfg: MechanismConfig) -> dict:
    """The summary (summary.json): per (optimizer, condition, tilt) block, per estimator
    per group final / AUC intervals, paired differences against the reference, verdicts."""
    by_block: dict[tuple, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        c = r["cell"]
        by_block[(c["optimizer"], c["condition"], c["tilt"])][c["estimator"]][c["seed"]] = r
    blocks = []
    for (opt, cond, tilt), ests in by_block.items():
        seeds = sorted(set.intersection(*(set(s) for s in ests.values())))  # complete pairs only
        m = {e: {s: cell_metrics(ests[e][s]) for s in seeds} for e in ests}
        groups = list(next(iter(next(iter(ests.values())).values()))["judge"])
        table = {}
        for e in ests:
            table[e] = {
                "final": {g: _ci([m[e][s]["final"][g] for s in seeds], cfg.level) for g in groups},
                "auc": {g: _ci([m[e][s]["auc"][g] for s in seeds], cfg.level) for g in groups},
                "final_mean": _ci([m[e][s]["final_mean"] for s in seeds], cfg.level),
                "auc_mean": _ci([m[e][s]["auc_mean"] for s in seeds], cfg.level),
                "final_minority": _ci([m[e][s]["final_minority"] for s in seeds], cfg.level)}
            if e != cfg.reference and cfg.reference in ests:
                ref = m[cfg.reference]
                table[e]["vs_reference"] = {
                    k: _ci([m[e][s][k] - ref[s][k] for s in seeds], cfg.level)
                    for k in ("final_mean", "auc_mean", "final_minority")}
        claims = []
        for cid, text, a, b, metric in CLAIMS:
            b = b.format(ref=cfg.reference)
            if a in ests and b in ests and a != b:
                d = _ci([m[a][s][f"{metric}_mean"] - m[b][s][f"{metric}_mean"] for s in seeds],
                        cfg.level)
                claims.append({"id": cid, "claim": text, "difference": f"{a} - {b}",
                               "metric": metric, **d, "verdict": verdict(d["lo"], d["hi"], cfg.margin)})
        curves = {e: {g: np.mean([ests[e][s]["judge"][g] for s in seeds], 0).tolist() for g in groups}
                  for e in ests}
        first = ests[next(iter(ests))][seeds[0]]
        blocks.append({"optimizer": opt, "condition": cond, "tilt": tilt, "seeds": seeds,
                       "groups": groups, "eval_steps": first["eval_steps"],
                       "offset_sd": first["offset_sd"], "estimators": table, "claims": claims,
                       "curves": curves})
    seconds = [r["seconds"] for r in results]
    # A check of the whole chain: GRPO centres within a prompt and a per-prompt offset is
    # constant there, so a grpo cell must judge the same under clean and offset rewards.
    curves = {(c["optimizer"], c["condition"], c["tilt"], c["seed"]): r["judge"]
              for r in results for c in [r["cell"]] if c["estimator"] == cfg.reference}
    pairs = [(v, curves[(o, "clean", t, s)]) for (o, cond, t, s), v in curves.items()
             if cond == "offset" and (o, "clean", t, s) in curves]
    same = [all(np.allclose(a[g], b[g], atol=1e-5) for g in a) for a, b in pairs]
    invariant = None if not pairs or cfg.reference != "grpo" else [sum(same), len(same)]
    return {"config": cfg.model_dump(), "n_cells": len(results), "expected_cells": len(cells(cfg)),
            "grpo_offset_invariant": invariant,
            "cell_seconds": {"mean": float(np.mean(seconds)), "max": float(np.max(seconds)),
                             "sum": float(np.sum(seconds))},
            "blocks": blocks}


# --------------------------------------------------------------------------- rendering

def _fmt(d: dict, signed: bool = False) -> str:
    if d is None or d.get("mean") is None or not math.isfinite(d["mean"]):
        return "–"
    f = "{:+.2f}" if signed else "{:.2f}"
    if not (math.isfinite(d["lo"]) and math.isfinite(d["hi"])):
        return f.format(d["mean"])
    return f"{f.format(d['mean'])} [{f.format(d['lo'])}, {f.format(d['hi'])}]"


def plot_curves(summary: dict, out_dir: Path) -> list[Path]:
    """One figure per (optimizer, tilt): rows = groups, one panel per condition; mean over seeds."""
    from pgrpo.stages.evaluation.plots import _save, algorithm_colors, plt

    out = []
    keys = sorted({(b["optimizer"], b["tilt"]) for b in summary["blocks"]})
    for opt, tilt in keys:
        blocks = [b for b in summary["blocks"] if (b["optimizer"], b["tilt"]) == (opt, tilt)]
        groups, conds = blocks[0]["groups"], [b["condition"] for b in blocks]
        colors = algorithm_colors(list(blocks[0]["curves"]))
        fig, axes = plt.subplots(len(groups), len(conds), figsize=(4.2 * len(conds), 2.6 * len(groups)),
                                 squeeze=False, sharex=True)
        for j, b in enumerate(blocks):
            for i, g in enumerate(groups):
                ax = axes[i][j]
                for e, curve in b["curves"].items():
                    ax.plot(b["eval_steps"], curve[g], label=e, color=colors[e], lw=1.4)
                ax.set_title(f"{b['condition']}: {g}" + (" (majority)" if i == 0 else ""), fontsize=9)
                ax.grid(alpha=0.3)
                if j == 0:
                    ax.set_ylabel("judge reward")
                if i == len(groups) - 1:
                    ax.set_xlabel("step")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"held-out judge reward, mean over {len(blocks[0]['seeds'])} seeds — "
                     f"{opt}, tilt {tilt}")
        out.append(_save(fig, out_dir / f"judge_{opt}_tilt{tilt}.png"))
    return out


def render(summary: dict, figures: list[Path], extra: str = "") -> str:
    cfg = summary["config"]
    ref = cfg["reference"]
    lines = ["# Mechanism experiment: P-GRPO vs GRPO with the judge as reward", "",
             "Generated by `python -m flows.mechanism` (pgrpo/experiments/mechanism.py, pgrpo/experiments/mechanism_report.py).",
             (f"{summary['n_cells']} cells of {summary['expected_cells']}; seeds {cfg['seeds']}; "
              f"{cfg['steps']} steps of {cfg['prompts_per_step']} prompts x G={cfg['num_generations']}; "
              f"judge on {cfg['eval_prompts_per_group']} held-out prompts x {cfg['eval_generations']} "
              f"samples per group every {cfg['eval_every']} steps."), "",
             (f"Intervals: {cfg['level']:.0%} Student-t over seeds of the paired difference "
              f"(estimator - {ref} within a seed). Verdict: supported if the interval is above 0; "
              f"refuted if below 0, or inside (-{cfg['margin']}, +{cfg['margin']}) (equivalence "
              "margin, judge-reward units); else unresolved. Final = judge reward at the last "
              "evaluation, AUC = mean judge reward over the evaluations (larger = faster); both "
              "averaged over groups with equal weight."), ""]
    if summary["n_cells"] < summary["expected_cells"]:
        lines += [(f"**Partial grid: {summary['n_cells']} of {summary['expected_cells']} cells finished.** "
                   "Blocks below use the seeds whose cells all finished (a column says how many); "
                   "blocks not listed did not run. Rerunning the same command finishes the grid "
                   "(finished cells are reused)."), ""]
    if extra:
        lines += [extra, ""]
    if summary.get("grpo_offset_invariant") is not None:
        k, n = summary["grpo_offset_invariant"]
        lines += [("Check: GRPO (scale group) ignores a per-prompt offset, so a grpo cell must judge "
                   f"the same under `clean` and `offset` rewards: {k} of {n} pairs do (float32 "
                   "rounding of the offset reward can flip a sampled token and split a pair)."), ""]
    lines += ["## Verdicts", ""]
    claim_ids = [c[0] for c in CLAIMS]
    for opt in dict.fromkeys(b["optimizer"] for b in summary["blocks"]):
        blocks = [b for b in summary["blocks"] if b["optimizer"] == opt]
        rows = []
        for b in blocks:
            got = {c["id"]: c for c in b["claims"]}
            rows.append([b["condition"], str(b["tilt"]), str(len(b["seeds"]))] + [
                f"{got[i]['verdict']} ({_fmt(got[i], True)})" if i in got else "–" for i in claim_ids])
        lines += [f"### {opt}", "", *markdown_table(["condition", "tilt", "seeds"] + claim_ids, rows), ""]
    lines += ["Claims: " + "; ".join(f"`{c[0]}`: {c[1]} ({c[2]} - {c[3].format(ref=ref)}, {c[4]})"
                                      for c in CLAIMS), ""]
    for b in summary["blocks"]:
        groups = b["groups"]
        lines += [f"## {b['optimizer']}, {b['condition']}, tilt {b['tilt']} ({len(b['seeds'])} seeds)", ""]
        if b["condition"] == "offset":
            lines += [f"Per-prompt offset SD {b['offset_sd']:.3f}.", ""]
        header = ["estimator"] + [f"final {g}" for g in groups] + [
            "final (mean)", "AUC (mean)", f"Δ final vs {ref}", f"Δ AUC vs {ref}",
            f"Δ minority final vs {ref}"]
        rows = []
        for e, t in b["estimators"].items():
            vs = t.get("vs_reference", {})
            rows.append([e] + [_fmt(t["final"][g]) for g in groups] + [
                _fmt(t["final_mean"]), _fmt(t["auc_mean"]),
                _fmt(vs.get("final_mean"), True), _fmt(vs.get("auc_mean"), True),
                _fmt(vs.get("final_minority"), True)])
        lines += markdown_table(header, rows) + [""]
        rows = [[e] + [_fmt(t["auc"][g]) for g in groups] for e, t in b["estimators"].items()]
        lines += ["AUC per group:", "", *markdown_table(["estimator"] + groups, rows), ""]
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def write_report(summary: dict, cfg: MechanismConfig, extra: str = "") -> Path:
    out = Path(cfg.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = plot_curves(summary, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    path = out / "report.md"
    path.write_text(render(summary, figures, extra))
    return path
