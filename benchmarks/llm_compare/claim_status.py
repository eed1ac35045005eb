"""Where a long comparison stands, and how long it has left, without reading any result.

    python benchmarks/llm_compare/claim_status.py                        # in the worktree
    python benchmarks/llm_compare/claim_status.py claim_judge --seeds 0-9
    python benchmarks/llm_compare/claim_status.py --archive <dir>      # another archive

Per comparison (default: the pre-registered two, claim_judge and claim_learned), one line
per seed: done (evaluated and pruned), evaluated, training (which algorithms have finished,
and the last step the running one logged), or not started; the thread count claim.sh
stamped; when its evaluation was stamped. Then the pace: the median time from a seed's start
(claim.sh writes threads.txt when it first starts the seed) to its evaluation stamp, over
the seeds that ran so (one spanning more than MAX_GAP_H hours spanned a stop), and the time
left at that pace. A done seed not yet copied to the archive kept in git (claim_archive/
beside this script) is flagged with the command that copies it: a lost machine loses it. It reads file names, modification times and the `step` field of the
training logs, never a reward or a verdict: the pre-registered comparison is read only when
all its seeds are in. Standard library only, like prune_seeds.py beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

NAMES = ("claim_judge", "claim_learned")
MAX_GAP_H = 3.0  # a seed that took longer from start to stamp spanned a stop
MIN_SPAN_S = 60.0  # one that took less was not timed by its stamps (restored from git)
ARCHIVE = Path(__file__).resolve().parent / "claim_archive"  # the copy kept in git


def parse_seeds(text: str) -> list[int]:
    """'0-9' or '0,1,5' -> seeds."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def last_step(metrics: Path) -> int | None:
    """The largest `step` a training log holds (the log's other fields are not read)."""
    if not metrics.is_file():
        return None
    steps = [json.loads(line).get("step") for line in metrics.read_text().splitlines()
             if line.strip()]
    return max((s for s in steps if s is not None), default=None)


def seed_algorithms(params: Path) -> list[str] | None:
    """The algorithm names of the `algorithms:` section of the params file the comparison wrote
    for a seed (two-space keys under it; standard library only, so no YAML parser), or None."""
    if not params.is_file():
        return None
    names, inside = [], False
    for line in params.read_text().splitlines():
        if line and not line[0].isspace():
            inside = line.rstrip() == "algorithms:"
        elif inside and line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            names.append(line.strip()[:-1])
    return names


def seed_state(name: str, seed: int, root: Path = Path("."), archive: Path | None = None) -> dict:
    models = root / "models/compare" / name / f"seed{seed}"
    reports = root / "reports/compare" / name / f"seed{seed}"
    stamp = reports / "evaluated.json"
    threads = models / "threads.txt"
    state = {"seed": seed, "threads": threads.read_text().strip() if threads.is_file() else None,
             "started_at": threads.stat().st_mtime if threads.is_file() else None,
             "evaluated_at": stamp.stat().st_mtime if stamp.is_file() else None}
    if (models / "pruned.json").is_file():
        kept = archive is None or (archive / "models/compare" / name / models.name / "pruned.json").is_file()
        # its own record of when it was pruned: a seed restored from git has checkout-time stamps
        when = json.loads((models / "pruned.json").read_text()).get("when")
        return {**state, "state": "done" if kept else "done, not archived", "pruned_at": when}
    if stamp.is_file():
        return {**state, "state": "evaluated"}
    algs = sorted(p for p in models.iterdir() if p.is_dir()) if models.is_dir() else []
    if not algs:
        return {**state, "state": "not started"}
    finished = [a.name for a in algs if (a / "model").is_dir()]
    running = [(a.name, last_step(a / "metrics.jsonl")) for a in algs if a.name not in finished]
    detail = f"{len(finished)} trainings finished"
    if running:
        alg, step = running[0]
        detail += f", {alg} at step {step if step is not None else 0}"
    elif finished:  # every registered algorithm trained: the evaluation; else the next training
        registered = seed_algorithms(models / "params.yaml")
        evaluating = reports.is_dir() or (registered is not None and set(registered) <= set(finished))
        detail += ", evaluating" if evaluating else ", the next training starting"
    return {**state, "state": "training", "detail": detail}


def pace_s(states: list[dict]) -> float | None:
    """Median seconds from a seed's start to its evaluation stamp, stops left out, and seeds
    whose stamps do not time them: written by hand after the fact (negative), or restored
    from git, which gives every file its checkout time (under a minute apart)."""
    spans = [s["evaluated_at"] - s["started_at"] for s in states
             if s["evaluated_at"] is not None and s["started_at"] is not None]
    spans = [d for d in spans if MIN_SPAN_S < d < MAX_GAP_H * 3600]
    return statistics.median(spans) if spans else None


def report(name: str, seeds: list[int], root: Path = Path("."),
           archive: Path | None = None) -> list[str]:
    states = [seed_state(name, s, root, archive) for s in seeds]
    lines = [f"{name}:"]
    for s in states:
        when = (f" pruned {s['pruned_at'][:16].replace('T', ' ')}" if s.get("pruned_at") else
                time.strftime(" evaluated %Y-%m-%d %H:%M", time.localtime(s["evaluated_at"]))
                if s["evaluated_at"] else "")
        lines.append(f"  seed {s['seed']}: {s['state']}"
                     + (f" ({s['detail']})" if s.get("detail") else "")
                     + (f", threads {s['threads']}" if s["threads"] else "") + when)
    left = sum(s["state"] in ("training", "not started") for s in states)
    done = len(states) - left
    pace = pace_s(states)
    tail = f"  {done} of {len(states)} seeds evaluated"
    if left and pace:
        tail += (f"; {pace / 60:.0f} min a seed lately, so about {left * pace / 3600:.1f} h left "
                 f"({left} seeds, the one in progress counted whole)")
    lines.append(tail)
    if any(s["state"] == "done, not archived" for s in states):
        lines.append(f"  copy the seeds not archived, then commit them: python "
                     f"{Path(__file__).parent / 'prune_seeds.py'} {name} --weights --archive {archive}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", default=list(NAMES), help="compare.name of each comparison")
    ap.add_argument("--seeds", default="0-9", help="its seeds: '0-9' or '0,1,5'")
    ap.add_argument("--archive", type=Path, default=ARCHIVE,
                    help="the archive a done seed should be in (default: the one kept in git)")
    args = ap.parse_args(argv)
    for name in args.names:
        print("\n".join(report(name, parse_seeds(args.seeds), Path("."), args.archive)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
