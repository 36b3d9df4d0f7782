#!/usr/bin/env python3
"""PyTorch + transformers side of bench/compare.sh: the same measurements as `ptune bench`
(forward / evaluation of the valid-set reviews, batch 32, maxlen 128) and a cold start.

  torch_bench.py forward|eval --model DIR --data DIR [--rows N] [--threads 2]
  torch_bench.py cold --model DIR "text"      # import, load, predict one text, print it

Prints one JSON line per measurement, like `ptune bench`.
"""
import argparse
import json
import os
import sys
import time

T0 = time.time()
import torch  # noqa: E402
from transformers import BertForMaskedLM, BertTokenizer  # noqa: E402

HEAD = list(range(2, 6)) + [103] + list(range(6, 10))  # [unused2..5] [MASK] [unused6..9]


def encode(tok, text, maxlen):
    ids = tok.convert_tokens_to_ids(tok.tokenize(text))[: maxlen - 2 - len(HEAD)]
    return [101] + HEAD + ids + [102]


def scores(model, batch):
    L = max(len(s) for s in batch)
    ids = torch.zeros(len(batch), L, dtype=torch.long)
    for i, s in enumerate(batch):
        ids[i, : len(s)] = torch.tensor(s)
    h = model.bert(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state[:, 5]
    return model.cls(h)[:, [679, 2523]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["forward", "eval", "cold"])
    ap.add_argument("text", nargs="?")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--maxlen", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_intermixed_args()
    torch.set_num_threads(a.threads)
    tok = BertTokenizer(os.path.join(a.model, "vocab.txt"), do_lower_case=True)
    model = BertForMaskedLM.from_pretrained(a.model).eval()
    if a.what == "cold":
        with torch.no_grad():
            p = torch.softmax(scores(model, [encode(tok, a.text, a.maxlen)]), -1)[0]
        print(f"{int(p.argmax())}\t{p[0]:.6f}\t{p[1]:.6f}\t{a.text}", flush=True)
        print(json.dumps({"what": "cold start (in-process)", "seconds": time.time() - T0}), file=sys.stderr)
        return
    rows = [l.rstrip("\n").rsplit("\t", 1)[0] for l in open(os.path.join(a.data, "valid.tsv"), encoding="utf-8")]
    rows = rows[: a.rows] if a.rows else rows
    seqs = [encode(tok, t, a.maxlen) for t in rows]
    if a.what == "eval":
        seqs = sorted(seqs, key=len)
    t = time.time()
    with torch.no_grad():
        for i in range(0, len(seqs), a.batch):
            scores(model, seqs[i:i + a.batch])
    el = time.time() - t
    what = "forward, file-order batches" if a.what == "forward" else "evaluation (length-sorted batches)"
    print(json.dumps({"what": what, "examples": len(seqs), "seconds": el, "examples_per_s": len(seqs) / el,
                      "tokens": sum(len(s) for s in seqs)}))


if __name__ == "__main__":
    main()
