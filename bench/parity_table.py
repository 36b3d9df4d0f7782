"""Accuracy parity table from bench/parity.sh's outputs: per seed, then mean ± sd per side and
the difference of the means ± its standard error.  Usage: parity_table.py OUT_DIR"""
import glob
import json
import math
import re
import statistics as st
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "bench/out/parity"
runs = {}  # mode -> seed -> side -> (best valid, test @ best valid, best test)
for path in glob.glob(f"{out}/peer/*-p5e10-seed*.log"):
    mode, seed = re.search(r"(\w+)-p5e10-seed(\d+)", path).groups()
    lines = [l for l in open(path) if l.startswith("epoch:")]
    if len(lines) < 10:
        continue
    field = lambda line, name: float(re.search(name + r": ([0-9.]+)", line).group(1))
    best_test = max(field(l, "test_acc") for l in lines)
    runs.setdefault(mode, {}).setdefault(int(seed), {})["PyTorch"] = (
        field(lines[-1], "best_valid"), field(lines[-1], "test_at_best_valid"), best_test)
for path in glob.glob(f"{out}/ours/*-p5e10-seed*/summary.json"):
    mode, seed = re.search(r"(\w+)-p5e10-seed(\d+)", path).groups()
    s = json.load(open(path))
    if s["epochs"] < 10:
        continue
    runs.setdefault(mode, {}).setdefault(int(seed), {})["ptune"] = (
        s["best_valid"], s["test_at_best_valid"], s["best_test"])

for mode in sorted(runs):
    seeds = runs[mode]
    print(f"\n### {mode}\n")
    print("| seed | ptune: best valid | ptune: test @ best valid | ptune: best test "
          "| PyTorch: best valid | PyTorch: test @ best valid | PyTorch: best test |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for seed in sorted(seeds):
        cells = []
        for side in ("ptune", "PyTorch"):
            cells += [f"{x:.4f}" for x in seeds[seed][side]] if side in seeds[seed] else ["-"] * 3
        print(f"| {seed} | " + " | ".join(cells) + " |")
    both = [s for s in sorted(seeds) if len(seeds[s]) == 2]
    if len(both) < 2:
        continue
    print(f"\nseeds with both sides: {', '.join(map(str, both))}\n")
    for i, name in [(1, "test @ best valid"), (0, "best valid"), (2, "best test")]:
        a = [seeds[s]["ptune"][i] for s in both]
        b = [seeds[s]["PyTorch"][i] for s in both]
        se = math.sqrt(st.variance(a) / len(a) + st.variance(b) / len(b))
        print(f"- {name}: ptune {st.mean(a):.4f} ± {st.stdev(a):.4f}, PyTorch {st.mean(b):.4f} "
              f"± {st.stdev(b):.4f} (mean ± sd, n={len(a)}); difference "
              f"{100 * (st.mean(a) - st.mean(b)):+.2f} points ± {100 * se:.2f} (SE)")
