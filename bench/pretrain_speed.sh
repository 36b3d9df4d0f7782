#!/usr/bin/env bash
# Pretraining speed of ptune next to the PyTorch reference (../shared/peer/pretrain_peer.py
# --bench), measured one after the other in the same run: same corpus (the train-split review
# texts), batch 64, max length 128 (one text per sequence, truncated), 15% masking 80/10/10,
# AdamW, gradient clipping 1.0, continuing zh-mini, 2 threads. Prints tokens/s and peak RSS.
# Both rates leave out the first two steps (warm-up): PyTorch's from its per-step times,
# ptune's from its records (one every 2 steps, each rate measured without its held-out pass).
# The two draw different batches (their own seeded shuffles, both length-grouped), and a
# step's time follows its padded length, so the ratio is of batch positions per second
# (batch x padded length), exact on both sides; tokens/s is printed too.
#   bench/pretrain_speed.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-40}
PY=${PY:-/tmp/peer-venv/bin/python}
PEER=${PEER:-../shared/peer/pretrain_peer.py}
OUT=bench/out/pretrain-speed
mkdir -p "$OUT"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
cut -f1 assets/data/reviews/train.tsv > "$OUT/texts.txt"
/usr/bin/time -f "%M" -o "$OUT/peer.rss" "$PY" "$PEER" --vocab assets/models/zh-mini/vocab.txt \
  --train assets/data/reviews/train.tsv --out "$OUT/peer-model" --init assets/models/zh-mini \
  --bench "$STEPS" --threads 2 > "$OUT/peer.log" 2>&1
rm -rf "$OUT/run"
/usr/bin/time -f "%M" -o "$OUT/ptune.rss" target/release/ptune pretrain --corpus "$OUT/texts.txt" \
  --init assets/models/zh-mini --out "$OUT/run" --cache-dir "$OUT/cache" --packing truncate \
  --steps "$STEPS" --warmup 500 --lr 5e-4 --eval-every 2 --eval-sequences 64 --threads 2 --quiet \
  > "$OUT/ptune.log" 2>&1
python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
log = open(f"{out}/peer.log").read()
mean_len = float(re.search(r"mean len ([0-9.]+)", log).group(1))
steps = [(float(t), int(l)) for t, l in re.findall(r"bench step \d+: ([0-9.]+)s loss \S+ seqlen (\d+)", log)][2:]
peer_secs = sum(t for t, _ in steps)
peer_pos = 64 * sum(l for _, l in steps) / peer_secs      # exact: batch x padded length
peer_tps = mean_len * 64 * len(steps) / peer_secs         # estimate: the corpus' mean length
hist = [json.loads(l) for l in open(f"{out}/run/metrics.jsonl")]
# steps 3..N: each record's tokens since the previous one, at that record's rates
recs = [(b["tokens"] - a["tokens"], b) for a, b in zip(hist, hist[1:]) if b["step"] > 2]
secs = sum(t / b["tokens_per_s"] for t, b in recs)
ours_tps = sum(t for t, _ in recs) / secs
ours_pos = sum(t / b["tokens_per_s"] * b["positions_per_s"] for t, b in recs) / secs
last = hist[-1]
rss = lambda f: int(open(f"{out}/{f}").read().split()[-1]) / 1024
print(f"PyTorch: {peer_pos:,.0f} positions/s (batch x padded length, steps 3..{len(steps) + 2}, "
      f"{peer_secs / len(steps):.3f} s/step); ~{peer_tps:,.0f} tokens/s at the corpus' mean "
      f"{mean_len} tokens/sequence; peak RSS {rss('peer.rss'):,.0f} MiB")
print(f"ptune:   {ours_pos:,.0f} positions/s (steps 3..{last['step']}, {secs / (last['step'] - 2):.3f} s/step); "
      f"{ours_tps:,.0f} tokens/s (exact); peak RSS {rss('ptune.rss'):,.0f} MiB")
print(f"ratio:   {ours_pos / peer_pos:.2f}x positions/s, {rss('ptune.rss') / rss('peer.rss'):.2f}x RSS")
PY
