"""Free the disk an evaluated comparison seed no longer needs.

A comparison keeps, for every (seed, algorithm), the exported policy (0.5 GB for SmolLM2-135M in
fp32) and its training's final checkpoint (the weights again plus AdamW's two moments: 1.6 GB),
so that a rerun can tell a finished training from an interrupted one. Five algorithms make
~10.5 GB a seed: the pre-registered comparison (10 seeds x 2 rewards) would need ~210 GB.
Once a seed's evaluation is stamped (reports/compare/<name>/seed<s>/evaluated.json), its
trainings are only read for their metrics.jsonl (the training curves of the summary), so

    python benchmarks/llm_compare/prune_seeds.py claim_learned             # checkpoints only
    python benchmarks/llm_compare/prune_seeds.py claim_learned --weights   # and the policies

deletes, in every evaluated seed of comparison `claim_learned`, the checkpoints (and with
--weights the policies' weight files), and leaves models/compare/<name>/seed<s>/pruned.json
saying what went and when. The reports, samples and metrics stay; a deleted policy is
retrained bit for bit by `python -m pgrpo.experiments.compare ... --seeds <s>` after
removing pruned.json (training is deterministic by seed on these CPUs).

A pruned seed cannot be checked any more the way pgrpo.experiments.compare checks a seed
(its trainings would start over), so claim.sh skips every seed that has pruned.json.
With --archive DIR, each pruned seed (then small: reports, samples, metrics; no checkpoints)
is also copied to DIR, a folder that outlives this machine (another disk, a mounted share):
a lost machine then costs only the seed in progress, not the hours before it.

    python benchmarks/llm_compare/prune_seeds.py claim_learned --weights --archive /mnt/keep
    python benchmarks/llm_compare/prune_seeds.py claim_learned --restore /mnt/keep   # new machine

--restore copies back every archived seed this checkout lacks, so claim.sh skips it again.
The seeds' inputs (data/processed, models/reward) are archived once beside them and restored
too; a checkout that holds other ones stops the restore (its seeds would not be comparable).
Each archived seed also records the sha256 of every input file it trained on (inputs.json in
its models folder).

Git is the one folder here that outlives a machine, and it cannot hold the reward model (88 MB
of weights), so the pre-registered comparison's archive is kept in git without it
(benchmarks/llm_compare/claim_archive/). A machine retrains the reward model at the pinned
commit, and another machine's float rounding can change its last bits (seen 2026-12-07). An
archive without models/reward therefore restores the seeds and keeps the checkout's reward
model for the seeds still to run: every seed trains all its algorithms on one reward model, the
one its inputs.json names. data/processed must still match byte for byte.
Standard library only: it runs beside any pinned worktree's code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

PRUNED = "pruned.json"  # in models/compare/<name>/seed<s>/
INPUTS_RECORD = "inputs.json"  # beside it: the sha256 of each INPUTS file the seed trained on
# What every seed trains on, archived once beside the seeds: a reward model trained at
# another commit can differ in its last bits (seen 2026-12-07: eval loss 0.4705025 against
# 0.4705044; at one commit it retrains byte-identical), and seeds trained on two reward
# models are not one comparison.
INPUTS = ("data/processed", "models/reward")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def seed_folders(name: str, root: Path = Path(".")) -> list[tuple[Path, Path]]:
    """(models, reports) folder of every seed of comparison `name` whose evaluation is stamped."""
    reports = root / "reports" / "compare" / name if name else root / "reports" / "compare"
    models = root / "models" / "compare" / name if name else root / "models" / "compare"
    return [(models / r.name, r) for r in sorted(reports.glob("seed*"))
            if (r / "evaluated.json").is_file() and (models / r.name).is_dir()]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prune_seed(models: Path, weights: bool = False) -> dict:
    """Delete models/<seed>/*/checkpoints (and with `weights` the policies' weight files);
    write pruned.json last, so a kill mid-way leaves the seed unmarked (and pruned again)."""
    freed, removed = 0, []
    for run in sorted(p for p in models.iterdir() if p.is_dir()):
        targets = [run / "checkpoints"] if (run / "checkpoints").is_dir() else []
        if weights and (run / "model").is_dir():
            targets += [f for f in (run / "model").iterdir() if f.suffix in WEIGHT_SUFFIXES]
        for t in targets:
            freed += folder_bytes(t) if t.is_dir() else t.stat().st_size
            if t.is_dir():
                shutil.rmtree(t)
            else:
                t.unlink()
            removed.append(str(t.relative_to(models)))
    marker = models / PRUNED
    if marker.is_file() and not removed:
        return {"seed": models.name, "freed_bytes": 0, "removed": 0}  # its record stays as it is
    previous = json.loads(marker.read_text()) if marker.is_file() else {"removed": [], "freed_bytes": 0}
    record = {"removed": previous["removed"] + removed,
              "freed_bytes": previous["freed_bytes"] + freed,
              "weights_removed": weights or previous.get("weights_removed", False),
              "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "why": "evaluated (see the reports folder's evaluated.json); retrain by seed to "
                     "get a removed policy back"}
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(marker)
    return {"seed": models.name, "freed_bytes": freed, "removed": len(removed)}


def copy_folder(src: Path, dst: Path, ignore=None) -> None:
    """dst becomes a copy of src, all or nothing: copied beside it, then renamed into place."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=ignore)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def same_files(a: Path, b: Path) -> bool:
    """Whether folders a and b hold the same files with the same bytes."""
    names = sorted(f.relative_to(a) for f in a.rglob("*") if f.is_file())
    if names != sorted(f.relative_to(b) for f in b.rglob("*") if f.is_file()):
        return False
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def inputs_sha256(root: Path = Path(".")) -> dict[str, str]:
    """{path under root: sha256} of every file of INPUTS that root holds."""
    return {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for rel in INPUTS for f in sorted((root / rel).rglob("*")) if f.is_file()}


def archive_inputs(archive: Path, root: Path = Path(".")) -> list[str]:
    """Copy INPUTS to `archive` unless it holds them already; returns those copied."""
    done = []
    for rel in INPUTS:
        if (root / rel).is_dir() and not (archive / rel).is_dir():
            copy_folder(root / rel, archive / rel)
            done.append(rel)
    return done


def restore_inputs(archive: Path, root: Path = Path(".")) -> list[str]:
    """Copy back the archived INPUTS that root lacks; stop where root holds other ones."""
    done = []
    for rel in INPUTS:
        if not (archive / rel).is_dir():
            if (root / rel).is_dir() and any((archive / "models" / "compare").rglob(PRUNED)):
                print(f"prune_seeds: the archive holds no {rel}: the seeds still to run use "
                      f"this checkout's; each archived seed's {INPUTS_RECORD} names the files "
                      f"it trained on", file=sys.stderr)
            continue
        if (root / rel).is_dir():
            if not same_files(root / rel, archive / rel):
                raise SystemExit(
                    f"prune_seeds: {root / rel} differs from {archive / rel}, which the archived "
                    f"seeds were trained on: remove {root / rel} to have it restored from the "
                    f"archive, or give another archive")
            continue
        copy_folder(archive / rel, root / rel)
        done.append(rel)
    return done


def weightless_models(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: a policy folder whose weights were pruned (its config and tokenizer,
    3.5 MB a policy, of no use without them; retraining brings all back)."""
    model = Path(folder) / "model"
    if "model" in names and not any(f.suffix in WEIGHT_SUFFIXES for f in model.iterdir()):
        return ["model"]
    return []


def archive_seeds(name: str, archive: Path, root: Path = Path(".")) -> list[str]:
    """Copy INPUTS (once) and every pruned seed of `name` (models and reports folders) to
    `archive`, laid out as under root; a seed already there with the same pruned.json is left
    as it is. Returns what was copied."""
    done = archive_inputs(archive, root)
    for models, reports in seed_folders(name, root):
        marker = models / PRUNED
        if not marker.is_file():
            continue  # not pruned: checkpoints and weights too big to archive, and not final
        there = archive / models.relative_to(root)
        if (there / PRUNED).is_file() and (there / PRUNED).read_bytes() == marker.read_bytes():
            continue
        record = models / INPUTS_RECORD  # this checkout's inputs: those the seed trained on
        if not record.is_file():
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps(inputs_sha256(root), indent=2))
            tmp.replace(record)
        copy_folder(reports, archive / reports.relative_to(root))
        copy_folder(models, there, weightless_models)  # last: its pruned.json says the seed is complete
        done.append(f"{name}/{models.name}")
    return done


def restore_seeds(name: str, archive: Path, root: Path = Path(".")) -> list[str]:
    """Copy back from `archive` the INPUTS and every archived seed of `name` that root lacks
    (no pruned.json); stop where root holds other INPUTS. Returns what was copied."""
    done = restore_inputs(archive, root)
    for models, reports in seed_folders(name, archive):
        here = root / models.relative_to(archive)
        if not (models / PRUNED).is_file() or (here / PRUNED).is_file():
            continue
        for src in (reports, models):  # models last: its pruned.json marks the seed done
            copy_folder(src, root / src.relative_to(archive))
        done.append(f"{name}/{models.name}")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="the comparison's compare.name (its folder under models/compare/)")
    ap.add_argument("--weights", action="store_true",
                    help="also delete the evaluated policies' weights (retrain by seed to restore)")
    ap.add_argument("--root", type=Path, default=Path("."), help="the repository (default: here)")
    ap.add_argument("--archive", type=Path, metavar="DIR",
                    help="after pruning, copy each pruned seed to DIR (a folder that outlives this machine)")
    ap.add_argument("--restore", type=Path, metavar="DIR",
                    help="only copy back from DIR the archived seeds this checkout lacks; prune nothing")
    args = ap.parse_args(argv)
    if args.restore:
        for what in restore_seeds(args.name, args.restore, args.root):
            print(f"{what}: restored from {args.restore}")
        return 0
    seeds = seed_folders(args.name, args.root)
    if not seeds:
        print(f"prune_seeds: no evaluated seed of {args.name!r} under {args.root.resolve()}",
              file=sys.stderr)
    for models, _ in seeds:
        done = prune_seed(models, args.weights)
        print(f"{args.name}/{done['seed']}: {done['removed']} removed, "
              f"{done['freed_bytes'] / 1e9:.1f} GB freed")
    if args.archive:
        for what in archive_seeds(args.name, args.archive, args.root):
            print(f"{what}: archived to {args.archive}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
