#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for bench/gpu.sh: the stripped CUDA binary, xz-compressed, and
# the tokenized corpus shard (`ptune pretrain` accepts a shard directory as its corpus).
#   bench/gpu_prepare.sh SHARD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
strip -o .gpu/ptune target-cuda/release/ptune
xz -T2 -6 -f .gpu/ptune
rm -rf .gpu/shard && cp -r "$1" .gpu/shard
du -sh .gpu/*
