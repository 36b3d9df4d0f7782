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
# This machine's speed drifts by tens of percent over minutes (other tenants), so the two
# sides alternate: ROUNDS rounds of PyTorch then ptune, a ratio per round (each from two runs
# minutes apart at most), and the median of the rounds' ratios.
#   bench/pretrain_speed.sh [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-40}
ROUNDS=${2:-3}
PY=${PY:-/tmp/peer-venv/bin/python}
PEER=${PEER:-../shared/peer/pretrain_peer.py}
OUT=bench/out/pretrain-speed
mkdir -p "$OUT"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
cut -f1 assets/data/reviews/train.tsv > "$OUT/texts.txt"
for r in $(seq 1 "$ROUNDS"); do
/usr/bin/time -f "%M" -o "$OUT/peer.rss.$r" "$PY" "$PEER" --vocab assets/models/zh-mini/vocab.txt \
  --train assets/data/reviews/train.tsv --out "$OUT/peer-model" --init assets/models/zh-mini \
  --bench "$STEPS" --threads 2 > "$OUT/peer.log.$r" 2>&1
rm -rf "$OUT/run.$r"
/usr/bin/time -f "%M" -o "$OUT/ptune.rss.$r" target/release/ptune pretrain --corpus "$OUT/texts.txt" \
  --init assets/models/zh-mini --out "$OUT/run.$r" --cache-dir "$OUT/cache" --packing truncate \
  --steps "$STEPS" --warmup 500 --lr 5e-4 --eval-every 2 --eval-sequences 64 --threads 2 --quiet \
  > "$OUT/ptune.log.$r" 2>&1
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rss = lambda f: int(open(f"{out}/{f}").read().split()[-1]) / 1024
ratios, rss_ratios = [], []
for r in range(1, rounds + 1):
    log = open(f"{out}/peer.log.{r}").read()
    mean_len = float(re.search(r"mean len ([0-9.]+)", log).group(1))
    steps = [(float(t), int(l)) for t, l in re.findall(r"bench step \d+: ([0-9.]+)s loss \S+ seqlen (\d+)", log)][2:]
    peer_secs = sum(t for t, _ in steps)
    peer_pos = 64 * sum(l for _, l in steps) / peer_secs      # exact: batch x padded length
    peer_tps = mean_len * 64 * len(steps) / peer_secs         # estimate: the corpus' mean length
    hist = [json.loads(l) for l in open(f"{out}/run.{r}/metrics.jsonl")]
    # steps 3..N: each record's tokens since the previous one, at that record's rates
    recs = [(b["tokens"] - a["tokens"], b) for a, b in zip(hist, hist[1:]) if b["step"] > 2]
    secs = sum(t / b["tokens_per_s"] for t, b in recs)
    ours_tps = sum(t for t, _ in recs) / secs
    ours_pos = sum(t / b["tokens_per_s"] * b["positions_per_s"] for t, b in recs) / secs
    last = hist[-1]
    ratios.append(ours_pos / peer_pos)
    rss_ratios.append(rss(f"ptune.rss.{r}") / rss(f"peer.rss.{r}"))
    print(f"round {r}: PyTorch {peer_pos:,.0f} positions/s (steps 3..{len(steps) + 2}, "
          f"{peer_secs / len(steps):.3f} s/step; ~{peer_tps:,.0f} tokens/s at the corpus' mean "
          f"{mean_len} tokens/sequence), peak RSS {rss(f'peer.rss.{r}'):,.0f} MiB; "
          f"ptune {ours_pos:,.0f} positions/s ({secs / (last['step'] - 2):.3f} s/step; "
          f"{ours_tps:,.0f} tokens/s), peak RSS {rss(f'ptune.rss.{r}'):,.0f} MiB; "
          f"ratio {ratios[-1]:.2f}x positions/s, {rss_ratios[-1]:.2f}x RSS")
print(f"median of {rounds} rounds: {statistics.median(ratios):.2f}x positions/s "
      f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}), {statistics.median(rss_ratios):.2f}x peak RSS")
PY
