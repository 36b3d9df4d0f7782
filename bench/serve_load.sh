#!/usr/bin/env bash
# Load test of `ptune serve` and of a Python baseline doing the same classification, in one
# run, with wrk on loopback: 64 connections, 30 s each (bounded). Prints req/s, p50/p99 and
# errors. Needs wrk (Debian package) and PY with torch + transformers + safetensors (the
# baseline is skipped when PY does not exist).
#   BIN=/tmp/ptune-before LABEL=before bench/serve_load.sh   # a given binary, no build
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/tmp/peer-venv/bin/python}
DURATION=${DURATION:-30s}
CONNS=${CONNS:-64}
LABEL=${LABEL:-}
OUT=bench/out
mkdir -p $OUT
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=${CARGO_TARGET_DIR:-target}/release/ptune
fi
M=assets/models/zh-mini
# a small P-tuning adapter (the load does not depend on how well it was trained)
tiny=$OUT/load-data; mkdir -p $tiny; cp assets/data/reviews/train.tsv $tiny/; head -40 assets/data/reviews/valid.tsv > $tiny/valid.tsv; cp $tiny/valid.tsv $tiny/test.tsv
$BIN train --method ptune --data $tiny --shots 8 --epochs 1 --passes 1 --out $OUT/load-run --force --quiet > /dev/null
$BIN export --run $OUT/load-run --out $OUT/load.adapter > /dev/null

run_wrk() { # TAG DESCRIPTION URL
  local log=$OUT/wrk-$1.txt
  wrk -t2 -c$CONNS -d$DURATION --timeout 10s --latency -s bench/post.lua "$3" > "$log"
  rps=$(awk '/Requests\/sec/ {print $2}' "$log")
  p50=$(awk '$1=="50%" {print $2}' "$log")
  p99=$(awk '$1=="99%" {print $2}' "$log")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$log"); non2xx=${non2xx:-0}
  sock=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' "$log"); sock=${sock:-0}
  echo "| $2 | $rps | $p50 | $p99 | $((non2xx + sock)) |"
}

wait_listening() { # LOGFILE
  for _ in $(seq 1 600); do grep -q "listening on" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "server did not start: $(cat "$1")" >&2; exit 1
}

pids=()
trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done' EXIT

echo "| server | requests/s | p50 latency | p99 latency | errors |"
echo "|---|---:|---:|---:|---:|"
$BIN serve --adapter sent=$OUT/load.adapter --addr 127.0.0.1:18080 --max-batch 64 --max-wait-ms 5 > $OUT/serve-ptune.log 2>&1 &
pid=$!; pids+=($pid); wait_listening $OUT/serve-ptune.log
run_wrk ptune "ptune serve${LABEL:+ ($LABEL)} (micro-batching, max batch 64, max wait 5 ms)" http://127.0.0.1:18080/v1/classify
kill -TERM $pid; wait $pid || true

if [ ! -x "$PY" ]; then echo "(Python baseline skipped: no $PY)"; exit 0; fi

"$PY" bench/serve_baseline.py --model $M --adapter $OUT/load.adapter --port 18081 > $OUT/serve-python.log 2>&1 &
pid=$!; pids+=($pid); wait_listening $OUT/serve-python.log
run_wrk python "Python baseline (transformers + http.server, no batching)" http://127.0.0.1:18081/v1/classify
kill -TERM $pid; wait $pid || true
