"""Cells of the mechanism experiment -> paired intervals, verdicts, report.md, figures, JSON.

    from pgrpo.experiments.mechanism_report import summarize, write_report
    summary = summarize(results, cfg)          # results: pgrpo.experiments.mechanism.run_grid's list
    write_report(summary, cfg)                 # reports/mechanism/{report.md, summary.json, *.png}

    # how many seeds would decide each claim at the observed spread (figure + the rule's N)
    python -m pgrpo.experiments.mechanism_report --plan reports/mechanism/summary.json \
        --conditions clean,trap --tilts 0.5,0.8

Per cell and group: the judge reward at the last evaluation ("final") and the area under
the judge-reward curve over the evaluations (pgrpo.stages.evaluation.curves.curve_auc: the mean reward over
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

Planning (issue 25): per claim, the seeds whose interval would decide it (exclude 0 or lie
inside the margin) if the observed mean and spread held (metrics.seeds_needed, the spread
read back from the interval); `power_seeds` turns those into the seed count of a rerun by
a rule written before it (the smallest N that would decide `share` of the paper's claims).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from pgrpo.experiments.mechanism import cells
from pgrpo.experiments.mechanism_config import MechanismConfig
from pgrpo.stages.evaluation.curves import curve_auc
from pgrpo.stages.evaluation.metrics import interval_verdict, seeds_needed, t_interval
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
                               "metric": metric, **d, "verdict": verdict(d["lo"], d["hi"], cfg.margin),
                               "seeds_to_decide": plan_seeds(d, cfg.level, cfg.margin)})
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


# --------------------------------------------------------------------------- planning

PAPER_CLAIMS = ("higher_final", "faster", "random_loses_gain")  # the paper's, not ours


def plan_seeds(d: dict, level: float, margin: float, max_n: int = 100) -> int | None:
    """Seeds whose interval would decide the claim of interval d ({mean, lo, hi, n}) if its
    mean and spread held; None: no interval, or more than max_n."""
    n, lo, hi = d.get("n") or 0, d.get("lo"), d.get("hi")
    if n < 2 or lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    from scipy.stats import t as student_t

    sd = (hi - lo) / 2 * math.sqrt(n) / float(student_t.ppf((1 + level) / 2, n - 1))
    return seeds_needed(d["mean"], sd, level, margin, max_n)


def planning_rows(summary: dict, conditions=None, tilts=None) -> list[tuple[str, dict]]:
    """[(block label, {claim id: seeds to decide or None})] for the chosen blocks, derived
    from each claim's interval (so a summary.json written before planning existed plans too)."""
    cfg = summary["config"]
    rows = []
    for b in summary["blocks"]:
        if (conditions and b["condition"] not in conditions) or (tilts and b["tilt"] not in tilts):
            continue
        rows.append((f"{b['optimizer']} {b['condition']} {b['tilt']}",
                     {c["id"]: plan_seeds(c, cfg["level"], cfg["margin"]) for c in b["claims"]}))
    return rows


def planning_table(rows: list[tuple[str, dict]]) -> list[str]:
    claim_ids = [c[0] for c in CLAIMS]
    return markdown_table(["block"] + claim_ids, [
        [label] + ["–" if c not in got else ("> 100" if got[c] is None else str(got[c]))
                   for c in claim_ids] for label, got in rows])


def power_seeds(rows: list[tuple[str, dict]], share: float = 0.75,
                claims: tuple[str, ...] = PAPER_CLAIMS) -> int | None:
    """The smallest N at which `share` of the paper's claims in these blocks would be decided
    (their planning numbers <= N; a claim past max_n never is). None: no N does."""
    needs = sorted((n for _, got in rows for c, n in got.items() if c in claims),
                   key=lambda n: math.inf if n is None else n)
    if not needs:
        return None
    return needs[math.ceil(share * len(needs)) - 1]  # the k-th smallest must be decided


def plot_planning(rows: list[tuple[str, dict]], seeds_run: int, out_png: Path,
                  chosen: int | None = None) -> Path:
    """Blocks x claims, each cell the seeds that would decide it (colour on a log scale;
    bold: already decided by the seeds run)."""
    from pgrpo.stages.evaluation.plots import _save, plt

    claim_ids, cap = [c[0] for c in CLAIMS], 100
    grid = np.array([[np.nan if c not in got else (got[c] or cap * 1.5) for c in claim_ids]
                     for _, got in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.5 * len(claim_ids) + 2.5, 0.45 * len(rows) + 1.8))
    im = ax.imshow(np.log10(grid), cmap="viridis_r", aspect="auto", vmin=np.log10(2),
                   vmax=np.log10(cap * 1.5))
    for i, (_, got) in enumerate(rows):
        for j, c in enumerate(claim_ids):
            if c in got:
                n = got[c]
                ax.text(j, i, f"> {cap}" if n is None else str(n), ha="center", va="center",
                        fontsize=8, color="white" if (n or cap) > 20 else "black",
                        fontweight="bold" if n is not None and n <= seeds_run else "normal")
    ax.set_xticks(range(len(claim_ids)), claim_ids, rotation=25, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    fig.colorbar(im, ax=ax, label="log10 seeds to decide")
    title = f"seeds that would decide each claim, at the spread of {seeds_run} seeds"
    if chosen:
        title += f"\n(the rule's rerun: {chosen} seeds decide 3/4 of the paper's claims here)"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out_png)


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
    lines += ["## Planning: seeds that would decide each claim", "",
              (f"If each difference's mean and spread over these seeds held, the number of seeds whose "
               f"interval would exclude 0 or lie inside ±{cfg['margin']} (a planning number, not a "
               "result; '> 100': too close to 0 or to the margin for its spread). "
               "`python -m pgrpo.experiments.mechanism_report --plan <summary.json>` draws it."), "",
              *planning_table(planning_rows(summary)), ""]
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
    figures.append(plot_planning(planning_rows(summary), len(cfg.seeds), out / "planning.png"))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    path = out / "report.md"
    path.write_text(render(summary, figures, extra))
    return path


def main(argv: list[str] | None = None) -> int:
    """--plan: the planning figure and the rule's seed count from a finished summary.json."""
    parser = argparse.ArgumentParser(description="plan a rerun of the mechanism experiment")
    parser.add_argument("--plan", type=Path, required=True, help="a summary.json of this report")
    parser.add_argument("--conditions", default=None, help="comma-separated, e.g. clean,trap")
    parser.add_argument("--tilts", default=None, help="comma-separated, e.g. 0.5,0.8")
    parser.add_argument("--share", type=float, default=0.75,
                        help="share of the paper's claims the seed count must decide")
    parser.add_argument("--out", type=Path, default=None, help="figure (default: beside --plan)")
    a = parser.parse_args(argv)
    summary = json.loads(a.plan.read_text())
    rows = planning_rows(summary, a.conditions.split(",") if a.conditions else None,
                         [float(t) for t in a.tilts.split(",")] if a.tilts else None)
    if not rows:
        print(f"error: no block of {a.plan} matches --conditions / --tilts", file=sys.stderr)
        return 1
    n = power_seeds(rows, a.share)
    seeds_run = max(len(b["seeds"]) for b in summary["blocks"])
    out = plot_planning(rows, seeds_run, a.out or a.plan.parent / "planning.png", n)
    print("\n".join(planning_table(rows)))
    print(f"figure: {out}")
    print(f"seeds={n if n is not None else '> 100'}  (decides {a.share:.0%} of the paper's claims "
          f"({', '.join(PAPER_CLAIMS)}) in these blocks, if their spreads held)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
