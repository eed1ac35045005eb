"""Per group and policy: mean answer length (words), judge reward and learned reward of an
evaluation's samples (the samples.jsonl that evaluate writes), to see how a policy moved.

    python benchmarks/llm_compare/sample_lengths.py benchmarks/llm_compare/2026-12-02-balanced/seed1_samples.jsonl
    python benchmarks/llm_compare/sample_lengths.py reports/samples.jsonl     # the default run's
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path
from statistics import mean


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    cells = defaultdict(list)
    for r in rows:
        cells[r["group"], r["policy"]].append(r)
    out = ["| group | " + " | ".join(f"{p}: words / judge / learned" for p in policies) + " |",
           "|---|" + "---:|" * len(policies)]
    for g in dict.fromkeys(r["group"] for r in rows):
        out.append(f"| {g} | " + " | ".join(
            f"{mean(len(r['completion'].split()) for r in cells[g, p]):.1f} / "
            f"{mean(r['judge'] for r in cells[g, p]):+.2f} / "
            f"{mean(r['learned'] for r in cells[g, p]):+.2f}" for p in policies) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help="a samples.jsonl written by evaluate")
    print(table(parser.parse_args().samples))
