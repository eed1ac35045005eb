#!/usr/bin/env bash
# Issue 25's pre-registered comparison (benchmarks/llm_compare/README.md, "Pre-registered"):
# both rewards, seed by seed, so that a stop leaves both at the same number of seeds; then
# the summary of each over the seeds done. Resumable: rerun the same command after a stop
# (finished trainings and evaluations are not redone). Needs `make run` (or
# `dvc repro train_reward`) first: the comparison trains on the pipeline's data and reward model.
#   bash benchmarks/llm_compare/claim.sh              # seeds 0-9, as pre-registered
#   SEEDS="0 1" bash benchmarks/llm_compare/claim.sh  # a part of them (the rest later)
#   PRUNE=weights bash benchmarks/llm_compare/claim.sh  # keep less on disk (below)
# Disk: a seed and reward leaves ~10.5 GB (five policies and their final checkpoints), ~210 GB
# in all. So once a seed's evaluation is stamped, prune_seeds.py deletes its checkpoints
# (PRUNE=checkpoints, the default: ~2.6 GB a seed and reward stay), with PRUNE=weights the
# policies' weights too (the reports, samples and training metrics stay; a policy is retrained
# bit for bit from its seed), PRUNE=none keeps all. A pruned seed is skipped here: its
# trainings can no longer be told finished (they would start over).
# ARCHIVE=<dir>: a folder that outlives this machine. Each pruned seed is copied there, and a
# rerun first copies back the archived seeds this checkout lacks, so a lost machine costs only
# the seed in progress (2026-12-07: one lost 5 seed-rewards, ~4 h, kept in ignored folders).
#   PRUNE=weights ARCHIVE=/mnt/keep/claim bash benchmarks/llm_compare/claim.sh
# Here the one folder that outlives a machine is git: ARCHIVE=<main>/benchmarks/llm_compare/
# claim_archive, committed at every stop (its README; the reward model's weights stay out).
# Two cores, one process per reward: two processes of one thread each did 1.3x the training
# steps of one process of two threads (2026-12-07, benchmarks/llm_compare/README.md), so:
#   PRESETS=configs/claim_judge.yaml OMP_NUM_THREADS=1 taskset -c 0 bash .../claim.sh &
#   PRESETS=configs/claim.yaml       OMP_NUM_THREADS=1 taskset -c 1 bash .../claim.sh &
# The thread count sets the float rounding, hence the samples: a seed's is stamped in
# models/compare/<name>/seed<s>/threads.txt when it starts, and a resume with another is refused.
# Where it stands and how long is left: python benchmarks/llm_compare/claim_status.py
# Editing this file while it runs: write a new file and mv it over this one (bash reads its
# script as it goes, so an edit in place can change what a running instance does next).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-0 1 2 3 4 5 6 7 8 9}
PRUNE=${PRUNE:-checkpoints}
ARCHIVE=${ARCHIVE:-}
HERE=$(cd "$(dirname "$0")" && pwd)  # prune_seeds.py beside this script (stdlib only)
PRESETS=${PRESETS:-configs/claim.yaml configs/claim_judge.yaml}
THREADS=${OMP_NUM_THREADS:-default}  # default: torch's, one thread a core
case "$PRUNE" in
  none|checkpoints) weights_flag="" ;; weights) weights_flag="--weights" ;;
  *) echo "claim.sh: PRUNE must be none, checkpoints or weights, not '$PRUNE'" >&2; exit 2 ;;
esac
declare -A NAME  # preset -> its compare.name (its folders under models/ and reports/compare/)
for preset in $PRESETS; do
  NAME[$preset]=$("$PY" -c "import sys; from pgrpo.experiments.compare import load_compare; print(load_compare(sys.argv[1]).name)" "$preset")
done
if [ -n "$ARCHIVE" ]; then
  if [ "$PRUNE" = none ]; then echo "claim.sh: ARCHIVE keeps pruned seeds only: set PRUNE too" >&2; exit 2; fi
  for preset in $PRESETS; do "$PY" "$HERE/prune_seeds.py" "${NAME[$preset]}" --restore "$ARCHIVE"; done
fi
for seed in $SEEDS; do
  for preset in $PRESETS; do
    name=${NAME[$preset]}
    if [ -f "models/compare/$name/seed$seed/pruned.json" ]; then
      echo "== seed $seed, $preset: evaluated and pruned (models/compare/$name/seed$seed/pruned.json); skipped"
      continue
    fi
    stamp=models/compare/$name/seed$seed/threads.txt
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$THREADS" ]; then
      echo "claim.sh: seed $seed of $name started with OMP_NUM_THREADS=$(cat "$stamp"), this is $THREADS:" \
        "resume it with the same (the thread count sets the float rounding, hence the samples)" >&2
      exit 2
    fi
    # written once, when the seed first starts (claim_status.py times a seed from it)
    [ -f "$stamp" ] || { mkdir -p "$(dirname "$stamp")" && echo "$THREADS" > "$stamp"; }
    echo "== seed $seed, $preset (OMP_NUM_THREADS=$THREADS)"
    "$PY" -m pgrpo.experiments.compare --params "$preset" --seeds "$seed"
    if [ "$PRUNE" != none ]; then
      # unquoted: an empty flag adds no argument
      "$PY" "$HERE/prune_seeds.py" "$name" $weights_flag ${ARCHIVE:+--archive "$ARCHIVE"}
    fi
  done
done
# the summary over every seed evaluated so far (all ten: the pre-registered result)
for preset in $PRESETS; do
  name=${NAME[$preset]}
  done_seeds=$(for d in reports/compare/"$name"/seed*/; do
    if [ -f "$d/evaluated.json" ]; then basename "$d" | sed 's/seed//'; fi; done | sort -n | paste -sd, -)
  if [ -n "$done_seeds" ]; then
    "$PY" -m pgrpo.experiments.compare --params "$preset" --seeds "$done_seeds" --summarize-only
  fi
done
