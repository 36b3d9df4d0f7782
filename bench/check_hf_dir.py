#!/usr/bin/env python3
"""Checks a model directory written by ptune (e.g. `ptune pretrain`'s model/) with transformers:
it loads with no missing or unexpected keys, and its [MASK] probabilities equal those that
`ptune fill-mask --json` prints for the same texts.

  check_hf_dir.py MODEL_DIR PTUNE_BINARY
"""
import json
import subprocess
import sys

import torch
from transformers import BertForMaskedLM, BertTokenizer

TEXTS = ["这个手机[MASK]好用", "[MASK]满意。物流很快，包装完好", "质量太差了，[MASK]推荐购买"]


def main():
    model_dir, binary = sys.argv[1], sys.argv[2]
    # computed in float32 on both sides (ptune widens f16/bf16 weights when it loads them)
    model, info = BertForMaskedLM.from_pretrained(model_dir, output_loading_info=True, dtype=torch.float32)
    print("loading info:", {k: v for k, v in info.items() if v})
    bad = info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]
    model.eval()
    tok = BertTokenizer.from_pretrained(model_dir)
    worst = 0.0
    for text in TEXTS:
        out = subprocess.run([binary, "fill-mask", "--model", model_dir, "--json", "--top-k", "5", text],
                             capture_output=True, text=True, check=True)
        ours = json.loads(out.stdout)
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            probs = model(**enc).logits.softmax(-1)[0]
        pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0].item()
        for _tok, token_id, prob in ours[0]["candidates"]:
            worst = max(worst, abs(probs[pos, token_id].item() - prob))
    print(f"largest probability difference vs ptune fill-mask: {worst:.2e}")
    if bad or worst > 1e-4:
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
