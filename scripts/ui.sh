#!/usr/bin/env bash
# Prefect server + MLflow UI + the pgrpo-pipeline deployments, together on localhost.
#
#   scripts/ui.sh start     # background; pids and logs in .run/; prints the URLs
#   scripts/ui.sh status
#   scripts/ui.sh stop      # deployments first (a runner outliving its server hangs), then servers
#
# Then trigger a run from the UI (Deployments -> pgrpo-pipeline/params -> Run, the form
# holds the knobs) or: PREFECT_API_URL=http://127.0.0.1:4200/api prefect deployment run pgrpo-pipeline/params
# Ports: PREFECT_PORT (4200), MLFLOW_PORT (5000). Prefect keeps its database in .prefect/
# (PREFECT_HOME; set it to use another), MLflow its runs in ./mlflow.db (MLFLOW_TRACKING_URI).
#
#   PGRPO_TRACKING=postgres scripts/ui.sh start    # a team's stack instead: MLflow's database in
#       a private PostgreSQL cluster (.run/pg, port PG_PORT 5433; the OS's postgresql and the
#       `team` extra), `mlflow server` with proxied artifacts (.run/mlartifacts), and the
#       deployments record to it over HTTP (pgrpo/tracking/team_stack.py). Stop the same way.
# Run from anywhere: everything happens in the repo root, with the venv's tools if present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUN="$ROOT/.run"
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
[ -x "$ROOT/.venv/bin/python" ] && export PATH="$ROOT/.venv/bin:$PATH"

export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.prefect}"
export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$ROOT/mlflow.db}"
# Offline: no telemetry, no model hub (models come from packages, see README).
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true \
  DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
# 2 processes instead of 8 (~500 MB instead of 1.2 GB); the UI needs no job runner.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

launch() {  # name, command...: own session (setsid), so stop can end its whole process group
  local name=$1; shift
  if alive "$name"; then echo "$name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

wait_for() {  # name, url, seconds
  local name=$1 url=$2 t=$3
  for _ in $(seq "$t"); do
    if python - "$url" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
EOF
    alive "$name" || { echo "$name exited; last lines of $RUN/$name.log:"; tail -20 "$RUN/$name.log"; return 1; }
    sleep 1
  done
  echo "$name not answering $url after ${t}s (log: $RUN/$name.log)"; return 1
}

halt() {  # name, seconds to wait after SIGTERM before SIGKILL
  local name=$1 t=$2 pid
  alive "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  pid=$(cat "$RUN/$name.pid")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq "$((t * 5))"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name did not stop in ${t}s: SIGKILL"; kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"; echo "stopped $name"
}

PG_PORT="${PG_PORT:-5433}"
TEAM=$([ "${PGRPO_TRACKING:-}" = postgres ] && echo 1 || true)

start() {
  mkdir -p "$RUN" "$PREFECT_HOME"
  launch prefect prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
  if [ -n "$TEAM" ]; then
    local db
    db=$(python -m pgrpo.tracking.team_stack start --dir "$RUN/pg" --port "$PG_PORT")
    launch mlflow python -m pgrpo.tracking.team_stack server --backend "$db" \
      --port "$MLFLOW_PORT" --artifacts "$RUN/mlartifacts"
    export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"  # what the runs record to
  else
    launch mlflow mlflow ui --backend-store-uri "$MLFLOW_TRACKING_URI" --host 127.0.0.1 --port "$MLFLOW_PORT"
  fi
  wait_for prefect "$PREFECT_API_URL/health" 60
  wait_for mlflow "http://127.0.0.1:$MLFLOW_PORT/health" 60
  launch serve python -m flows.serve
  sleep 3
  alive serve || { echo "flows.serve exited:"; tail -20 "$RUN/serve.log"; exit 1; }
  echo "Prefect UI   http://127.0.0.1:$PREFECT_PORT   (deployments: pgrpo-pipeline/params)"
  echo "MLflow UI    http://127.0.0.1:$MLFLOW_PORT"
  echo "logs and pids in $RUN; stop with: scripts/ui.sh stop"
}

stop() {
  halt serve 20
  halt mlflow 10
  halt prefect 20
  if [ -n "$TEAM" ]; then python -m pgrpo.tracking.team_stack stop --dir "$RUN/pg" && echo "stopped postgres"; fi
}

status() {
  for n in prefect mlflow serve; do
    if alive "$n"; then echo "$n running (pid $(cat "$RUN/$n.pid"))"; else echo "$n stopped"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status"; exit 2 ;;
esac
