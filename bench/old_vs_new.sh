#!/usr/bin/env bash
# Speed of two ptune binaries (old, new) one after the other, twice each, then PyTorch, on zh-mini
# with 2 threads (a benchmark, not a test):  OLD=/tmp/ptune-old NEW=target/release/ptune bench/old_vs_new.sh
cd "$(dirname "$0")/.."
OLD=${OLD:?path of the old binary} NEW=${NEW:?path of the new binary}
PY=${PY:-/tmp/peer-venv/bin/python}
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
for round in 1 2; do
  for b in old:$OLD new:$NEW; do
    tag=${b%%:*}; bin=${b#*:}
    for what in forward eval; do echo "$tag $round $($bin bench --what $what --rows 2000 --threads 2)"; done
    for what in ptune finetune; do echo "$tag $round $($bin bench --what $what --steps 30 --threads 2)"; done
  done
done
for what in forward eval; do echo "torch $($PY bench/torch_bench.py $what --model assets/models/zh-mini --data assets/data/reviews --rows 2000 --threads 2)"; done
for mode in ptune finetune; do
  echo "torch $mode $($PY ../shared/peer/peer_seed.py --model assets/models/zh-mini --data assets/data/reviews --mode $mode --epochs 1 --max-steps 30 --skip-eval --threads 2 2>&1 | grep -o 'examples_per_s: [0-9.]*' | head -1)"
done
