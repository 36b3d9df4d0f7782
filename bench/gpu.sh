#!/usr/bin/env bash
# One prepared run on a GPU machine that has CUDA, Python with torch + transformers, and no Rust
# toolchain or network. Build here, carry the binary, run this there (≤ 9 minutes):
#
#   cargo build --release --features cuda --target-dir target-cuda
#   bench/gpu_prepare.sh                      # fills .gpu/ (ignored): binary (xz), corpus shard
#   # on the GPU machine, from the repo root, with .gpu/ carried:
#   OUT=/some/dir bench/gpu.sh
#
# What it runs, each step logged to $OUT/gpu.log (and JSON lines to $OUT/results.jsonl):
#   1. the device and driver; zero-shot on CUDA (its accuracy must equal the CPU's exactly up to
#      float rounding: 0.5595 valid / 0.5525 test on zh-mini), a logits self-check;
#   2. MLM pretraining on CUDA, continuing zh-mini on the corpus shard, for PRETRAIN_MIN minutes;
#      the model comes back as f16 safetensors shards of ≤ 15 MiB;
#   3. eval / P-tuning / fine-tuning speed at the zh-mini and BERT-base shapes, ptune and PyTorch
#      eager on the same GPU (f32 both sides; at the BERT-base shape also bf16 on both sides:
#      ptune --precision bf16 against PyTorch bf16 autocast); zh-mini's evaluation once more
#      with unpadded batch lengths (--len-multiple 1), against the default multiples of 32;
#   4. the full published P-tuning recipe (20 epochs × 50 passes) at the BERT-base shape, wall time
#      (cut at RECIPE_SEC).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu}
PRETRAIN_MIN=${PRETRAIN_MIN:-2}
RECIPE_SEC=${RECIPE_SEC:-45}
# run directories live outside $OUT: only gpu.log, results.jsonl, pre-metrics.jsonl and the
# model (config, index, two shards) come back — at most 8 files
WORK=${WORK:-/tmp/ptune-gpu-work}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/gpu.log") 2>&1
BIN=.gpu/ptune
if [ -f .gpu/ptune.xz ] && [ ! -x "$BIN" ]; then
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.gpu/ptune.xz'), open('$BIN','wb'))"
  chmod +x "$BIN"
fi
# cubecl loads the CUDA driver and NVRTC at run time; PyTorch's wheels carry NVRTC.
for d in $(python3 - <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for lib in glob.glob(os.path.join(sp, "nvidia", "**", "lib*", "libnvrtc*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(" ".join(sorted(dirs)))
PY
); do export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
# unversioned names too, for loaders that ask for libnvrtc.so / libnvrtc-builtins.so
mkdir -p /tmp/nvlib
for f in $(echo "${LD_LIBRARY_PATH:-}" | tr ':' ' '); do
  for l in "$f"/libnvrtc*.so.*; do [ -e "$l" ] && ln -sf "$l" "/tmp/nvlib/$(basename "$l" | sed 's/\.so\..*/.so/')"; done
done
export LD_LIBRARY_PATH="/tmp/nvlib:${LD_LIBRARY_PATH:-}"
ls -la /tmp/nvlib; ldconfig -p | grep -E "libcuda.so|nvrtc" | head
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
git log -1 --format='commit %H' 2>/dev/null || true
M=assets/models/zh-mini
D=assets/data/reviews
R="$OUT/results.jsonl"
step() { echo; echo "== $(date +%T) $*"; }

step "1. zero-shot on CUDA (logits check: CPU gives valid 0.5595, test 0.5525)"
timeout 120 $BIN train --device cuda --method zeroshot --model $M --data $D --out "$WORK/zs" --force --quiet

step "2. pretraining on CUDA, continuing zh-mini, ${PRETRAIN_MIN} min"
timeout $(( PRETRAIN_MIN * 60 + 90 )) $BIN pretrain --device cuda --corpus .gpu/shard --init $M --out "$WORK/pre" \
  --steps 4000 --warmup 200 --lr 2e-4 --batch-size 64 --eval-every 500 --save-every 100000 \
  --eval-sequences 512 --max-minutes "$PRETRAIN_MIN" --dtype f16 --shard-mib 15 --cache-dir "$WORK/cache"
cp "$WORK/pre/metrics.jsonl" "$OUT/pre-metrics.jsonl" 2>/dev/null
mkdir -p "$OUT/model"
cp "$WORK"/pre/model/*.safetensors "$WORK"/pre/model/*.json "$OUT/model/" 2>/dev/null
rm -f "$OUT/model/tokenizer_config.json"
step "3a. ptune bench, zh-mini, CUDA"
timeout 150 $BIN bench --device cuda --model $M --what eval,ptune,finetune --rows 2000 --steps 30 | tee -a "$R"
# the same evaluation with each batch at its own length (--len-multiple 1; the default on GPUs
# pads to multiples of 32): if new shapes cost kernel compilation/tuning, this is much slower
timeout 45 $BIN bench --device cuda --len-multiple 1 --model $M --what eval --rows 1000 | tee -a "$R"
step "3b. PyTorch, zh-mini, CUDA (f32, then bf16 autocast)"
timeout 90 python3 bench/torch_gpu_bench.py --model $M --data $D --rows 2000 --steps 30 | tee -a "$R"
timeout 60 python3 bench/torch_gpu_bench.py --model $M --data $D --rows 2000 --steps 30 --dtype bf16 | tee -a "$R"
B=bench/models/bert-base-random
[ -d $B ] || timeout 120 python3 bench/make_random_bert.py $B
step "3c. ptune bench, BERT-base shape, CUDA"
timeout 150 $BIN bench --device cuda --model $B --what eval,ptune,finetune --rows 2000 --steps 30 | tee -a "$R"
step "3d. PyTorch, BERT-base shape, CUDA"
timeout 90 python3 bench/torch_gpu_bench.py --model $B --data $D --rows 2000 --steps 30 | tee -a "$R"
step "3e. bf16 at the BERT-base shape: ptune --precision bf16, PyTorch bf16 autocast"
timeout 110 $BIN bench --device cuda --precision bf16 --model $B --what eval,ptune,finetune --rows 1000 --steps 20 | tee -a "$R"
timeout 60 python3 bench/torch_gpu_bench.py --model $B --data $D --rows 1000 --steps 20 --dtype bf16 | tee -a "$R"
nvidia-smi --query-gpu=memory.used --format=csv

step "4. the published P-tuning recipe (20 x 50 passes) at the BERT-base shape, ≤ ${RECIPE_SEC}s"
t0=$(date +%s.%N)
timeout "$RECIPE_SEC" $BIN train --device cuda --method ptune --recipe seed --model $B --data $D --out "$WORK/recipe" --force
echo "recipe exit $? after $(python3 -c "import time;print(round(time.time()-$t0,1))") s"
cat "$WORK/recipe/metrics.jsonl" "$WORK/recipe/summary.json" 2>/dev/null

step "done"; ls -la "$OUT" "$OUT/model"
