#!/usr/bin/env bash
# Issue 25's pre-registered comparison (benchmarks/llm_compare/README.md, "Pre-registered"):
# both rewards, seed by seed, so that a stop leaves both at the same number of seeds; then
# the summary of each over the seeds done. Resumable: rerun the same command after a stop
# (finished trainings and evaluations are not redone). Needs `make run` (or
# `dvc repro train_reward`) first: the comparison trains on the pipeline's data and reward model.
#   bash benchmarks/llm_compare/claim.sh              # seeds 0-9, as pre-registered
#   SEEDS="0 1" bash benchmarks/llm_compare/claim.sh  # a part of them (the rest later)
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-0 1 2 3 4 5 6 7 8 9}
PRESETS="configs/claim.yaml configs/claim_judge.yaml"
for seed in $SEEDS; do
  for preset in $PRESETS; do
    echo "== seed $seed, $preset"
    "$PY" -m pgrpo.experiments.compare --params "$preset" --seeds "$seed"
  done
done
# the summary over every seed evaluated so far (all ten: the pre-registered result)
for preset in $PRESETS; do
  name=$("$PY" -c "import sys; from pgrpo.experiments.compare import load_compare; print(load_compare(sys.argv[1]).name)" "$preset")
  done_seeds=$(ls -d reports/compare/"$name"/seed*/ 2>/dev/null | while read -r d; do
    [ -f "$d/evaluated.json" ] && basename "$d" | sed 's/seed//'; done | sort -n | paste -sd, -)
  [ -n "$done_seeds" ] && "$PY" -m pgrpo.experiments.compare --params "$preset" --seeds "$done_seeds" --summarize-only
done
