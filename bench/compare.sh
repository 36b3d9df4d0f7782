#!/usr/bin/env bash
# Speed of ptune next to the PyTorch reference, measured in the same run on this machine
# (a benchmark, not a test). Prints a markdown table of ratios and writes bench/out/.
#
#   bench/compare.sh                 # zh-mini and the BERT-base shape
#   MODELS=zh-mini bench/compare.sh  # one model
#
# Needs: the Rust toolchain; a Python with torch + transformers (PY, default
# /tmp/peer-venv/bin/python — see ../shared/peer/README.md); the reference script (PEER).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/tmp/peer-venv/bin/python}
PEER=${PEER:-../shared/peer/peer_seed.py}
MODELS=${MODELS:-"zh-mini bert-base"}
THREADS=2
OUT=bench/out
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
cargo build --release -q
BIN=target/release/ptune
DATA=assets/data/reviews
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
[ -d bench/models/bert-base-random ] || "$PY" bench/make_random_bert.py bench/models/bert-base-random

# record TAG SIDE JSON: appends one result line
record() { echo "{\"model\": \"$1\", \"side\": \"$2\", \"result\": $3}" >> "$OUT/results.jsonl"; }
# max RSS (KiB) of a finished /usr/bin/time -v log
rss() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }

for name in $MODELS; do
  if [ "$name" = zh-mini ]; then M=assets/models/zh-mini; ROWS=2000; STEPS=30; else M=bench/models/bert-base-random; ROWS=256; STEPS=6; fi
  echo "== $name ($M): forward/eval on $ROWS valid rows, $STEPS training steps" >&2

  for what in forward eval; do
    record "$name" ptune "$($BIN bench --model "$M" --what $what --rows $ROWS --threads $THREADS)"
    record "$name" torch "$("$PY" bench/torch_bench.py $what --model "$M" --data $DATA --rows $ROWS --threads $THREADS)"
  done

  for mode in ptune finetune; do
    /usr/bin/time -v -o "$OUT/time-ptune-$name-$mode.txt" $BIN bench --model "$M" --what $mode --steps $STEPS --threads $THREADS > "$OUT/ptune-$name-$mode.json"
    line=$(cat "$OUT/ptune-$name-$mode.json")
    record "$name" ptune "{\"what\": \"$mode training\", \"examples_per_s\": $(echo "$line" | sed 's/.*"examples_per_s":\([0-9.e+-]*\).*/\1/'), \"max_rss_kib\": $(rss "$OUT/time-ptune-$name-$mode.txt")}"
    /usr/bin/time -v -o "$OUT/time-torch-$name-$mode.txt" "$PY" "$PEER" --model "$M" --data $DATA --mode $mode --epochs 1 \
      --max-steps $STEPS --skip-eval --threads $THREADS > "$OUT/torch-$name-$mode.log" 2>&1
    eps=$(grep -o 'examples_per_s: [0-9.]*' "$OUT/torch-$name-$mode.log" | head -1 | awk '{print $2}')
    record "$name" torch "{\"what\": \"$mode training\", \"examples_per_s\": $eps, \"max_rss_kib\": $(rss "$OUT/time-torch-$name-$mode.txt")}"
  done

  # cold start: process start -> first prediction printed (median of 5), zero-shot adapter
  tiny=$OUT/tiny-data; mkdir -p $tiny; cp $DATA/train.tsv $tiny/; head -4 $DATA/valid.tsv > $tiny/valid.tsv; cp $tiny/valid.tsv $tiny/test.tsv
  $BIN train --method zeroshot --model "$M" --data $tiny --out "$OUT/zs-$name" --force --quiet > /dev/null
  $BIN export --run "$OUT/zs-$name" --model "$M" --out "$OUT/zs-$name.adapter" > /dev/null
  for side in ptune torch; do
    times=()
    for i in 1 2 3 4 5; do
      t0=$(date +%s.%N)
      if [ $side = ptune ]; then $BIN predict --model "$M" --adapter "$OUT/zs-$name.adapter" "这个手机很好用" | head -2 > /dev/null
      else "$PY" bench/torch_bench.py cold --model "$M" "这个手机很好用" 2>/dev/null | head -1 > /dev/null; fi
      t1=$(date +%s.%N)
      times+=("$(echo "$t1 - $t0" | bc)")
    done
    med=$(printf '%s\n' "${times[@]}" | sort -g | sed -n 3p)
    record "$name" $side "{\"what\": \"cold start\", \"seconds\": $(printf %.3f "$med")}"
  done
done

python3 - "$OUT/results.jsonl" <<'PY' | tee "$OUT/table.md"
import json, sys, platform, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
shapes = {"zh-mini": (4, 256, 1024), "bert-base": (12, 768, 3072)}
PEAK = 2 * 2.6e9 * 64  # 2 cores x 2.6 GHz x (2 FMA pipes x 16 f32 lanes x 2 flops)
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
print(f"CPU: {cpu}, 2 threads; peak f32 assumed {PEAK/1e9:.0f} GFLOP/s (2 cores x 2.6 GHz x 64 flop/cycle, AVX-512 FMA)\n")
print("| model | measurement | ptune | PyTorch | ratio (ptune/PyTorch, >1 = ptune better) | ptune GFLOP/s (dense layers) |")
print("|---|---|---:|---:|---:|---:|")
for model in shapes:
    rs = [r for r in rows if r["model"] == model]
    whats = []
    for r in rs:
        if r["result"]["what"] not in whats:
            whats.append(r["result"]["what"])
    for w in whats:
        p = next((r["result"] for r in rs if r["side"] == "ptune" and r["result"]["what"] == w), None)
        t = next((r["result"] for r in rs if r["side"] == "torch" and r["result"]["what"] == w), None)
        if not p or not t:
            continue
        if w == "cold start":
            print(f"| {model} | {w} (s) | {p['seconds']:.2f} | {t['seconds']:.2f} | {t['seconds']/p['seconds']:.2f}x | |")
            continue
        gf = ""
        if "tokens" in p:
            L, H, I = shapes[model]
            # dense layers actually computed: every layer but the last at every token; the
            # last one only projects keys and values there (its rest runs at [MASK] alone)
            flops = 2 * p["tokens"] * ((L - 1) * (4 * H * H + 2 * H * I) + 2 * H * H)
            gf = f"{flops / p['seconds'] / 1e9:.0f} ({100 * flops / p['seconds'] / PEAK:.0f}% of peak)"
        print(f"| {model} | {w} (examples/s) | {p['examples_per_s']:.1f} | {t['examples_per_s']:.1f} | {p['examples_per_s']/t['examples_per_s']:.2f}x | {gf} |")
        if "max_rss_kib" in p:
            print(f"| {model} | {w}: peak RSS (MiB) | {p['max_rss_kib']/1024:.0f} | {t['max_rss_kib']/1024:.0f} | {p['max_rss_kib']/t['max_rss_kib']:.2f}x of PyTorch | |")
PY
