"""Which way does each estimator push answer length, group by group? On the base policy's
evaluation samples: the Pearson correlation between a sample's advantage and its length in
words, per group, for every registered estimator, under the learned reward and the judge.
A group's history is taken to be all of its base samples (pgrpo.stages.evaluation.reward_check does
the same). With balanced prompt sampling each group weighs the same in a step, so the sum
over groups is the net pull on length of a step's update, to first order.

    python benchmarks/llm_compare/length_push.py reports/compare/seed1/samples.jsonl   # after a comparison

P-GRPO's advantage is GRPO's rescaled plus the prompt's offset from its group's mean
(DESIGN.md, Corollary 3.1): where a group's long-answer prompts also score higher, the
offset adds a between-prompt pull toward length that GRPO's per-prompt centring removes.
"""

import argparse
from pathlib import Path

import numpy as np

from pgrpo.core.advantages import ADVANTAGE_ESTIMATORS
from pgrpo.core.metric_log import read_metrics
from pgrpo.stages.evaluation.report import markdown_table
from pgrpo.stages.evaluation.reward_check import _advantages


def length_push(path: Path, rewards=("learned", "judge")) -> dict[str, dict[str, dict[str, float]]]:
    """{reward: {group: {estimator: corr(advantage, words)}}} over the base policy's samples."""
    rows = [r for r in read_metrics(path) if r["policy"] == "base"]
    if not rows:
        raise ValueError(f"{path}: no samples of policy 'base'")
    names = sorted({r["group"] for r in rows})
    g = np.array([names.index(r["group"]) for r in rows])
    q = np.array([f"{r['group']}/{r['prompt_id']}" for r in rows])
    words = np.array([len(r["completion"].split()) for r in rows], dtype=float)
    out = {}
    for reward in rewards:
        x = np.array([r[reward] for r in rows], dtype=float)
        adv = {e: _advantages(e, x, q, g) for e in ADVANTAGE_ESTIMATORS}
        out[reward] = {n: {e: float(np.corrcoef(a[g == k], words[g == k])[0, 1])
                           for e, a in adv.items()} for k, n in enumerate(names)}
    return out


def render(push: dict) -> str:
    lines = []
    for reward, groups in push.items():
        ests = list(next(iter(groups.values())))
        rows = [[n, *(f"{c[e]:+.2f}" for e in ests)] for n, c in groups.items()]
        rows.append(["sum over groups",
                     *(f"{sum(c[e] for c in groups.values()):+.2f}" for e in ests)])
        lines += [f"reward: {reward}", "", *markdown_table(["group", *ests], rows, left=1), ""]
    return "\n".join(lines)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help="a samples.jsonl written by evaluate")
    print(render(length_push(parser.parse_args().samples)))
