#!/usr/bin/env bash
# Accuracy of one backbone on the 1% reviews split, the way RESULTS.md's pretraining table
# reports it: `compare` (zero-shot with the [P] template, fine-tuning, P-tuning; test at best
# valid) for each seed, plus zero-shot with the manual template "[MASK]满意。{text}".
#   bench/backbone_eval.sh MODEL_DIR OUT_DIR [SEEDS]      (SEEDS default 42,43,44)
set -euo pipefail
cd "$(dirname "$0")/.."
M=$1; OUT=$2; SEEDS=${3:-42,43,44}
BIN=${BIN:-target/release/ptune}
mkdir -p "$OUT"
$BIN train --method zeroshot --model "$M" --template "[MASK]满意。{text}" --out "$OUT/manual-zeroshot" --force --quiet
$BIN compare --model "$M" --seeds "$SEEDS" --out "$OUT/compare" --force --quiet 2>&1 | tee "$OUT/compare.txt"
