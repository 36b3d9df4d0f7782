#!/usr/bin/env python3
"""Table and plot of accuracy against pretraining tokens (RESULTS.md), from the directories
written by bench/backbone_eval.sh and the pretraining run's metrics.jsonl.

  pretrain_table.py OUT.svg NAME:TOKENS:HELDOUT_LOSS:EVAL_DIR [...]

TOKENS is the number of pretraining tokens beyond zh-mini; HELDOUT_LOSS the run's held-out MLM
loss at that point ('-' if not measured). Prints a markdown table (mean ± sd over seeds, test at
best valid) and writes a small SVG plot (no plotting library needed).
"""
import json
import math
import statistics as st
import sys


def mean_sd(xs):
    if not xs:
        return float("nan"), float("nan")
    return st.mean(xs), (st.stdev(xs) if len(xs) > 1 else 0.0)


def load(eval_dir):
    runs = json.load(open(f"{eval_dir}/compare/compare.json"))
    by = {}
    for r in runs:
        m = r["config"]["method"] if "method" in r["config"] else r["summary"]["method"]
        by.setdefault(m, []).append(r["summary"])
    manual = json.load(open(f"{eval_dir}/manual-zeroshot/summary.json"))
    return by, manual


def main():
    out_svg = sys.argv[1]
    rows = []
    for arg in sys.argv[2:]:
        name, tokens, loss, d = arg.split(":", 3)
        by, manual = load(d)
        r = {"name": name, "tokens": float(tokens), "loss": None if loss == "-" else float(loss),
             "manual": (manual["best_valid"], manual["test_at_best_valid"]),
             "zs": (by["zeroshot"][0]["best_valid"], by["zeroshot"][0]["test_at_best_valid"])}
        for m in ("finetune", "ptune", "ptune-v2"):
            r[m + "_valid"] = mean_sd([s["best_valid"] for s in by.get(m, [])])
            r[m + "_test"] = mean_sd([s["test_at_best_valid"] for s in by.get(m, [])])
            r[m + "_n"] = len(by.get(m, []))
        rows.append(r)
    f = lambda ms: "-" if math.isnan(ms[0]) else f"{ms[0]:.4f} ± {ms[1]:.4f}"
    print("| backbone | extra MLM tokens | held-out MLM loss (ppl) | zero-shot `[MASK]满意。` valid / test | zero-shot `[P]` valid / test | fine-tuning valid | fine-tuning test | P-tuning valid | P-tuning test | deep prompts valid | deep prompts test | P-tuning − fine-tuning (test) | seeds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        loss = "-" if r["loss"] is None else f"{r['loss']:.3f} ({math.exp(r['loss']):.1f})"
        gap = r["ptune_test"][0] - r["finetune_test"][0]
        print(f"| {r['name']} | {r['tokens']/1e6:.1f} M | {loss} | {r['manual'][0]:.4f} / {r['manual'][1]:.4f} | "
              f"{r['zs'][0]:.4f} / {r['zs'][1]:.4f} | {f(r['finetune_valid'])} | {f(r['finetune_test'])} | "
              f"{f(r['ptune_valid'])} | {f(r['ptune_test'])} | {f(r['ptune-v2_valid'])} | {f(r['ptune-v2_test'])} | {gap*100:+.1f} pt | {r['ptune_n']} |")
    # plot: test accuracy against extra tokens
    W, H, L, B = 640, 400, 60, 50
    xs = [r["tokens"] / 1e6 for r in rows]
    xmax = max(xs) * 1.05 or 1
    ymin, ymax = 0.45, 0.75
    X = lambda x: L + (W - L - 20) * x / xmax
    Y = lambda y: H - B - (H - B - 30) * (y - ymin) / (ymax - ymin)
    series = [("fine-tuning", "#1f77b4", [r["finetune_test"][0] for r in rows]),
              ("P-tuning", "#ff7f0e", [r["ptune_test"][0] for r in rows]),
              ("deep prompts", "#d62728", [r["ptune-v2_test"][0] for r in rows]),
              ("zero-shot [MASK]满意。", "#2ca02c", [r["manual"][1] for r in rows]),
              ("zero-shot [P]", "#9467bd", [r["zs"][1] for r in rows])]
    order = sorted(range(len(rows)), key=lambda i: xs[i])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">test accuracy (at best valid) against extra pretraining tokens</text>',
             f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="30" x2="{L}" y2="{H-B}" stroke="black"/>']
    for k in range(7):
        y = ymin + k * (ymax - ymin) / 6
        parts.append(f'<text x="{L-6}" y="{Y(y)+4}" text-anchor="end">{y:.2f}</text><line x1="{L}" y1="{Y(y)}" x2="{W-20}" y2="{Y(y)}" stroke="#ddd"/>')
    for x in sorted(set(xs)):
        parts.append(f'<text x="{X(x)}" y="{H-B+16}" text-anchor="middle">{x:.1f}</text>')
    parts.append(f'<text x="{(W+L)/2}" y="{H-12}" text-anchor="middle">extra MLM tokens (millions) beyond zh-mini</text>')
    series = [s for s in series if not any(math.isnan(y) for y in s[2])]
    for j, (label, color, ys) in enumerate(series):
        pts = " ".join(f"{X(xs[i]):.1f},{Y(ys[i]):.1f}" for i in order)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i in order:
            parts.append(f'<circle cx="{X(xs[i]):.1f}" cy="{Y(ys[i]):.1f}" r="3" fill="{color}"/>')
        parts.append(f'<text x="{L+10}" y="{45+16*j}" fill="{color}">{label}</text>')
    parts.append("</svg>")
    open(out_svg, "w").write("\n".join(parts))


if __name__ == "__main__":
    main()
