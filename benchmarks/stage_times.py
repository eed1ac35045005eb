"""Wall time of each stage of a pipeline run, read from its MLflow runs (start and end of
every stage's child run under the newest pipeline parent), and the gaps between them (process
start-up, DVC's hashing and lock file).

    python benchmarks/stage_times.py                         # ./mlflow.db, newest pipeline run
    python benchmarks/stage_times.py --db /tmp/fresh/mlflow.db --total 900
                                                             # --total: the whole command's wall time
                                                             # (e.g. from `time make run`), to show set-up
"""

from __future__ import annotations

import argparse
import sqlite3


def stage_rows(db: str) -> list[tuple[str, float, float]]:
    """(stage label, start s, end s) of the newest parent's child runs, in start order."""
    con = sqlite3.connect(db)
    parent = con.execute(
        "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'pgrpo.parent' ORDER BY r.start_time DESC LIMIT 1").fetchone()
    if parent is None:
        raise SystemExit(f"{db}: no pipeline run (no run tagged pgrpo.parent)")
    rows = con.execute(
        "SELECT r.run_uuid, r.start_time, r.end_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'mlflow.parentRunId' AND t.value = ? ORDER BY r.start_time", parent).fetchall()
    out = []
    for run_id, start, end in rows:
        tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
        label = tags.get("pgrpo.stage", "?") + (f"@{tags['pgrpo.algorithm']}" if tags.get("pgrpo.algorithm") else "")
        out.append((label, start / 1000, (end or start) / 1000))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="mlflow.db")
    parser.add_argument("--total", type=float, default=None,
                        help="the whole command's wall time in seconds, set-up included")
    args = parser.parse_args()
    rows = stage_rows(args.db)
    print("| stage | seconds | minutes |")
    print("|---|---:|---:|")
    for label, start, end in rows:
        print(f"| {label} | {end - start:.0f} | {(end - start) / 60:.1f} |")
    inside = sum(end - start for _, start, end in rows)
    span = rows[-1][2] - rows[0][1]
    print(f"| between stages (process start-up, DVC) | {span - inside:.0f} | {(span - inside) / 60:.1f} |")
    if args.total:
        print(f"| before the first stage (set-up) | {args.total - span:.0f} | {(args.total - span) / 60:.1f} |")
        print(f"| **total** | **{args.total:.0f}** | **{args.total / 60:.1f}** |")
    else:
        print(f"| **first stage start to last stage end** | **{span:.0f}** | **{span / 60:.1f}** |")


if __name__ == "__main__":
    main()
