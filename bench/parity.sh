#!/usr/bin/env bash
# Accuracy parity with the PyTorch reference: the same recipe on both sides, shortened equally
# (--passes 5 --epochs 10), on zh-mini + reviews, --frac 0.01, one run per (method, seed),
# one at a time. Then prints the table of RESULTS.md (bench/parity_table.py).
#
#   bench/parity.sh                          # finetune and ptune, seeds 42 43 44
#   SEEDS="45 46 47 48 49" METHODS=ptune bench/parity.sh
#
# Needs: a Python with torch + transformers (PY, default /tmp/peer-venv/bin/python, see
# ../shared/peer/README.md) and the reference script (PEER). Finished runs are not repeated.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/tmp/peer-venv/bin/python}
PEER=${PEER:-../shared/peer/peer_seed.py}
SEEDS=${SEEDS:-"42 43 44"}
METHODS=${METHODS:-"finetune ptune"}
OUT=${OUT:-bench/out/parity}
M=assets/models/zh-mini
DATA=assets/data/reviews
mkdir -p "$OUT/ours" "$OUT/peer"
cargo build --release -q
for seed in $SEEDS; do
  for mode in $METHODS; do
    run=$mode-p5e10-seed$seed
    if [ ! -f "$OUT/ours/$run/summary.json" ]; then
      target/release/ptune train --model $M --data $DATA --recipe seed --method $mode \
        --passes 5 --epochs 10 --seed "$seed" --out "$OUT/ours/$run" --force --quiet
    fi
    if ! grep -q "^epoch: 10 " "$OUT/peer/$run.log" 2>/dev/null; then
      "$PY" "$PEER" --model $M --data $DATA --mode "$mode" --passes 5 --epochs 10 \
        --seed "$seed" > "$OUT/peer/$run.log" 2>&1
    fi
  done
done
python3 bench/parity_table.py "$OUT"
