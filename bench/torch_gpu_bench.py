#!/usr/bin/env python3
"""PyTorch side of bench/gpu.sh: the workloads of `ptune bench --what eval|ptune|finetune` on a
GPU, eager mode, so both sides are measured on the same device in the same run.

  torch_gpu_bench.py --model DIR --data DIR [--rows 2000] [--steps 30] [--dtype f32|bf16]

Workloads (as in ../shared/peer/peer_seed.py and ptune's bench):
- eval: [CLS] [unused2..5] [MASK] [unused6..9] text [SEP] (max 128 tokens), batches of 32
  length-sorted valid rows, class logits (不/很) at [MASK];
- ptune: frozen BERT, prompt encoder (Embedding(8,H) → 2-layer BiLSTM → Linear-ReLU-Linear)
  spliced at the 8 prompt positions, random-MLM targets (15%) + label word at [MASK], MLM head
  at the targets only, Adam step; batches of 32 from the 1% few-shot rows;
- finetune: the same batches, every weight trainable, AdamW step.
Prints one JSON line per measurement (examples/s, peak GPU memory).
"""
import argparse
import json
import os
import random
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BertForMaskedLM, BertTokenizer

MASK_POS = 5
PROMPT_POS = [1, 2, 3, 4, 6, 7, 8, 9]


class PromptEncoder(nn.Module):
    def __init__(self, init_rows):
        super().__init__()
        n, h = init_rows.shape
        self.embedding = nn.Embedding(n, h)
        self.embedding.weight.data.copy_(init_rows)
        self.lstm_head = nn.LSTM(h, h // 2, num_layers=2, bidirectional=True, batch_first=True)
        self.mlp_head = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h))

    def forward(self):
        x = self.embedding.weight.unsqueeze(0)
        return self.mlp_head(self.lstm_head(x)[0]).squeeze(0)


def read_tsv(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                t, l = line.rsplit("\t", 1)
                rows.append((t, int(l)))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--what", default="eval,ptune,finetune")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    rng = random.Random(0)
    tok = BertTokenizer(os.path.join(args.model, "vocab.txt"), do_lower_case=True)
    head = [2, 3, 4, 5, 103, 6, 7, 8, 9]

    def encode(text):
        return [101] + head + tok.convert_tokens_to_ids(tok.tokenize(text))[: 128 - 2 - len(head)] + [102]

    valid = [(encode(t), l) for t, l in read_tsv(os.path.join(args.data, "valid.tsv"))[: args.rows]]
    train_all = read_tsv(os.path.join(args.data, "train.tsv"))
    train = [(encode(t), l) for t, l in train_all[: int(len(train_all) * 0.01)]]
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def pad(seqs):
        L = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), L, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return ids

    def emit(what, examples, seconds, extra=None):
        d = {"side": "torch", "what": what, "dtype": args.dtype, "examples": examples,
             "seconds": round(seconds, 4), "examples_per_s": round(examples / seconds, 2),
             "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
        d.update(extra or {})
        print(json.dumps(d), flush=True)

    for what in args.what.split(","):
        model = BertForMaskedLM.from_pretrained(args.model).to(dev)
        torch.cuda.reset_peak_memory_stats()
        if what == "eval":
            model.eval()
            order = sorted(range(len(valid)), key=lambda i: len(valid[i][0]))
            batches = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
            with torch.no_grad(), amp:
                for warm in (True, False):
                    torch.cuda.synchronize()
                    t0 = time.time()
                    correct = 0
                    for b in batches:
                        ids = pad([valid[j][0] for j in b]).to(dev)
                        h = model.bert(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state[:, MASK_POS]
                        logits = model.cls(h)[:, [679, 2523]]
                        gold = torch.tensor([valid[j][1] for j in b], device=dev)
                        correct += int((logits.argmax(-1) == gold).sum())
                    torch.cuda.synchronize()
                    if not warm:
                        emit("eval", len(valid), time.time() - t0, {"accuracy": correct / len(valid)})
            continue
        V = model.config.vocab_size
        model.train()
        enc = None
        if what == "ptune":
            for p in model.parameters():
                p.requires_grad_(False)
            enc = PromptEncoder(model.bert.embeddings.word_embeddings.weight[2:10].detach().clone()).to(dev)
            opt = torch.optim.Adam(enc.parameters(), lr=1e-5, weight_decay=5e-4)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
        pos = torch.tensor(PROMPT_POS, device=dev)

        def step():
            items = rng.sample(train, min(args.batch, len(train)))
            ids = pad([s for s, _ in items])
            real = ids != 0
            r = torch.rand(ids.shape)
            src = ids.clone()
            tgt = torch.zeros_like(ids)
            sel = real & (r < 0.15)
            src[real & (r < 0.12)] = 103
            rnd = real & (r >= 0.135) & (r < 0.15)
            src[rnd] = torch.randint(1, V, (int(rnd.sum()),))
            tgt[sel] = ids[sel]
            src[:, MASK_POS] = 103
            tgt[:, MASK_POS] = torch.tensor([2523 if l == 1 else 679 for _, l in items])
            src, tgt, att = src.to(dev), tgt.to(dev), real.long().to(dev)
            with amp:
                emb = model.bert.embeddings.word_embeddings(src)
                if enc is not None:
                    emb = emb.clone()
                    emb[:, pos] = enc().unsqueeze(0).expand(src.shape[0], -1, -1).to(emb.dtype)
                h = model.bert(inputs_embeds=emb, attention_mask=att).last_hidden_state
                m = tgt != 0
                loss = F.cross_entropy(model.cls(h[m]).float(), tgt[m])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return len(items)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        t0 = time.time()
        n = sum(step() for _ in range(args.steps))
        torch.cuda.synchronize()
        emit(f"{what} training", n, time.time() - t0)
        del model, opt, enc
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
