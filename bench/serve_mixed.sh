#!/usr/bin/env bash
# Mixed-task batching against per-task batching in `ptune serve`, in one run: 8 adapters on one
# zh-mini backbone (4 P-tuning, 4 deep-prompt (ptune-v2) adapters, each trained for a few steps
# with its own seed: the load does not depend on how well they were trained), 64 connections
# whose requests are spread uniformly over the 8 tasks (bench/post.lua), DURATION each.
# The only difference between the two servers is `--per-task-batches`.
#   bench/serve_mixed.sh                                  # builds, then runs
#   BIN=/tmp/ptune DURATION=20s bench/serve_mixed.sh       # a given binary, no build
# Needs wrk (Debian package). Prints a markdown table; logs in bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30s}
CONNS=${CONNS:-64}
TASKS=8
OUT=bench/out
mkdir -p $OUT
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=${CARGO_TARGET_DIR:-target}/release/ptune
fi
tiny=$OUT/mixed-data; mkdir -p $tiny
cp assets/data/reviews/train.tsv $tiny/; head -40 assets/data/reviews/valid.tsv > $tiny/valid.tsv; cp $tiny/valid.tsv $tiny/test.tsv
adapters=()
for k in $(seq 0 $((TASKS - 1))); do
  a=$OUT/mixed-task$k.adapter
  if [ ! -f "$a" ]; then
    if [ $((k % 2)) -eq 0 ]; then
      $BIN train --method ptune --data $tiny --shots 8 --epochs 1 --passes 1 --seed $k --out $OUT/mixed-run$k --force --quiet > /dev/null
    else
      $BIN train --method ptune-v2 --head linear --prefix-len 16 --data $tiny --shots 8 --epochs 1 --passes 1 --seed $k \
        --out $OUT/mixed-run$k --force --quiet > /dev/null
    fi
    $BIN export --run $OUT/mixed-run$k --out "$a" > /dev/null
  fi
  adapters+=(--adapter "task$k=$a")
done

wait_listening() { # LOGFILE
  for _ in $(seq 1 600); do grep -q "listening on" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "server did not start: $(cat "$1")" >&2; exit 1
}
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true' EXIT

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), binary $BIN, $TASKS adapters (4 ptune + 4 ptune-v2), $CONNS connections, $DURATION each"
echo
echo "| batching | requests/s | p50 latency | p99 latency | errors |"
echo "|---|---:|---:|---:|---:|"
for mode in mixed per-task; do
  flag=(); [ $mode = per-task ] && flag=(--per-task-batches)
  $BIN serve "${adapters[@]}" "${flag[@]}" --addr 127.0.0.1:18090 --max-batch 64 --max-wait-ms 5 \
    --max-connections 256 > $OUT/serve-$mode.log 2>&1 &
  pid=$!; wait_listening $OUT/serve-$mode.log
  log=$OUT/wrk-$mode.txt
  TASKS=$TASKS wrk -t2 -c$CONNS -d$DURATION --timeout 10s --latency -s bench/post.lua http://127.0.0.1:18090/v1/classify > $log
  rps=$(awk '/Requests\/sec/ {print $2}' $log)
  p50=$(awk '$1=="50%" {print $2}' $log)
  p99=$(awk '$1=="99%" {print $2}' $log)
  non2xx=$(awk '/Non-2xx/ {print $NF}' $log); non2xx=${non2xx:-0}
  sock=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' $log); sock=${sock:-0}
  echo "| $mode (\`serve${flag:+ ${flag[*]}}\`) | $rps | $p50 | $p99 | $((non2xx + sock)) |"
  kill -TERM $pid; wait $pid || true; pid=
done
