#!/usr/bin/env python3
"""Writes a BERT-base-shaped masked LM with random weights (12 layers, 768 hidden, 12 heads,
intermediate 3072, vocab 21128 = zh-mini's vocab.txt) in Hugging Face layout, for speed
benchmarks (speed does not depend on the weights).

  make_random_bert.py OUT_DIR [--vocab assets/models/zh-mini/vocab.txt]
"""
import argparse
import os
import shutil

import torch
from transformers import BertConfig, BertForMaskedLM

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--vocab", default=os.path.join(os.path.dirname(__file__), "..", "assets", "models", "zh-mini", "vocab.txt"))
a = ap.parse_args()
torch.manual_seed(0)
config = BertConfig(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
os.makedirs(a.out, exist_ok=True)
BertForMaskedLM(config).save_pretrained(a.out, safe_serialization=True)
shutil.copy(a.vocab, os.path.join(a.out, "vocab.txt"))
print("wrote", a.out)
