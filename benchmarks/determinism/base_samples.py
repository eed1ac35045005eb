"""Does the base policy draw the same test samples under two commits, or on two machines?
(docs/results.md, "The same code gives other numbers on another CPU": 9afde2a and 748299a drew the
same 448 of 448 on one machine, mean judge 0.480, where another machine's run had 0.483.)

    python benchmarks/determinism/base_samples.py --out /tmp/a.json       # ~2 min on 2 cores
    PYTHONPATH=<worktree at another commit> python benchmarks/determinism/base_samples.py \
        --out /tmp/b.json --compare /tmp/a.json        # run from that worktree (its params.yaml)

Needs `make run` (or `dvc repro assign_groups`) first: params.yaml's data/processed. Samples
the base model on the evaluate stage's test prompts exactly as the stage does
(pgrpo.stages.evaluation.policy_measures.run_policy, the `evaluate` section's seeds and
sizes), scores them with the judge, and saves the completions. The last line is
`mean_judge=<x> same_completions=<n> of <total>` (the count with --compare only).
The code measured is whichever `pgrpo` Python imports: PYTHONPATH picks a worktree's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import pgrpo
from pgrpo.core.config import PolicyConfig, load_section
from pgrpo.core.io import read_table
from pgrpo.core.models import load_policy, resolve_model
from pgrpo.stages.evaluation.eval_config import EvalConfig
from pgrpo.stages.evaluation.evaluate import eval_prompts
from pgrpo.stages.evaluation.judge import judge_scores
from pgrpo.stages.evaluation.policy_measures import run_policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--processed", type=Path, default=Path("data/processed"))
    ap.add_argument("--out", type=Path, required=True, help="where the completions go (JSON)")
    ap.add_argument("--compare", type=Path, help="another run's --out: count equal completions")
    args = ap.parse_args()
    print(f"code: {Path(pgrpo.__file__).parent}")
    cfg = load_section(args.params, "evaluate", EvalConfig)
    policy = load_section(args.params, "policy", PolicyConfig)
    prompts = eval_prompts(args.processed / "prompts.parquet", args.processed / "groups.parquet",
                           cfg.prompts_per_group, cfg.seed)
    model, tok = load_policy(str(resolve_model(policy.model)))
    model.eval()
    completions, _ = run_policy(model, tok, None, prompts, cfg, policy)
    g = cfg.samples_per_prompt
    users = [m["user_id"] for m in prompts.metadata for _ in range(g)]
    judged = np.asarray(judge_scores(read_table(args.processed / "judge.parquet"), users, completions))
    groups = prompts.group_ids.repeat_interleave(g).numpy()
    mean = float(np.mean([judged[groups == k].mean() for k in np.unique(groups)]))  # over groups
    args.out.write_text(json.dumps({"mean_judge": mean, "completions": completions}))
    line = f"mean_judge={mean:.6f}"
    if args.compare:
        other = json.loads(args.compare.read_text())["completions"]
        same = sum(a == b for a, b in zip(completions, other))
        line += f" same_completions={same} of {len(completions)}"
    print(line)


if __name__ == "__main__":
    main()
