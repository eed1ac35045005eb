"""Per group and policy: mean answer length (words), judge reward and learned reward of an
evaluation's samples (the samples.jsonl that evaluate writes), to see how a policy moved.

    python benchmarks/llm_compare/sample_lengths.py reports/compare/seed1/samples.jsonl   # after a comparison
    python benchmarks/llm_compare/sample_lengths.py reports/samples.jsonl     # the default run's
"""

import argparse
from collections import defaultdict
from pathlib import Path
from statistics import mean

from pgrpo.core.metric_log import read_metrics
from pgrpo.stages.evaluation.report import markdown_table


def table(path: Path) -> str:
    rows = read_metrics(path)  # JSON lines, as evaluate writes them
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    cells = defaultdict(list)
    for r in rows:
        cells[r["group"], r["policy"]].append(r)
    body = [[g, *(f"{mean(len(r['completion'].split()) for r in cells[g, p]):.1f} / "
                  f"{mean(r['judge'] for r in cells[g, p]):+.2f} / "
                  f"{mean(r['learned'] for r in cells[g, p]):+.2f}" for p in policies)]
            for g in dict.fromkeys(r["group"] for r in rows)]
    return "\n".join(markdown_table(
        ["group", *(f"{p}: words / judge / learned" for p in policies)], body, left=1))

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help="a samples.jsonl written by evaluate")
    print(table(parser.parse_args().samples))
