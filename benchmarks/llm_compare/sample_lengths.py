"""Per group and policy: mean answer length (words), judge reward and learned reward of an
evaluation's samples (the samples.jsonl that evaluate writes), to see how a policy moved.

    python benchmarks/llm_compare/sample_lengths.py reports/compare/seed1/samples.jsonl   # after a comparison
    python benchmarks/llm_compare/sample_lengths.py reports/samples.jsonl     # the default run's
    python benchmarks/llm_compare/sample_lengths.py reports/samples.jsonl --cap 40   # + who hits the cap

`--cap N` also counts, per policy, the answers that ran to the N-token length cap
(`policy.max_new_tokens`; the text re-tokenized by params.yaml's policy model, which can
differ from the sampled tokens by one or two at the end): an answer that did not stop
by itself was cut there, and "longer" then means "stops early less often".
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

def at_cap(path: Path, cap: int, model: str) -> str:
    """Per policy, the share of answers of `cap` tokens or more (under `model`'s tokenizer)."""
    from transformers import AutoTokenizer

    from pgrpo.core.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(model), trust_remote_code=False)
    rows = read_metrics(path)
    hits = defaultdict(list)
    for r in rows:
        hits[r["policy"]].append(len(tok(r["completion"], add_special_tokens=False)["input_ids"]) >= cap)
    return "\n".join(f"{p}: {mean(h):.0%} of {len(h)} answers ran to the {cap}-token cap"
                     for p, h in hits.items())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help="a samples.jsonl written by evaluate")
    parser.add_argument("--cap", type=int, default=None, help="the length cap in tokens")
    parser.add_argument("--model", default=None, help="tokenizer (default: params.yaml's policy.model)")
    args = parser.parse_args()
    print(table(args.samples))
    if args.cap:
        from pgrpo.core.config import policy_config

        print()
        print(at_cap(args.samples, args.cap, args.model or policy_config("params.yaml").model))
