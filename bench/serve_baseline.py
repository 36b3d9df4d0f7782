#!/usr/bin/env python3
"""Python baseline for bench/serve_load.sh: the same classification as `ptune serve` (a ptune
adapter's prompt vectors spliced into a frozen transformers BertForMaskedLM, label words at
[MASK]) behind a minimal HTTP server (http.server, one thread per connection, no batching).

  serve_baseline.py --model DIR --adapter FILE --task NAME --port PORT [--threads 2]
"""
import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from safetensors import safe_open
from transformers import BertForMaskedLM, BertTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--adapter", required=True)
ap.add_argument("--task", default="sent")
ap.add_argument("--port", type=int, default=8081)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
tok = BertTokenizer(os.path.join(a.model, "vocab.txt"), do_lower_case=True)
model = BertForMaskedLM.from_pretrained(a.model).eval()
with safe_open(a.adapter, "pt") as f:
    info = json.loads(f.metadata()["ptune"])
    vectors = f.get_tensor("prompt_vectors") if info["n_prompts"] else None
assert info["template"] == "[P]*4 [MASK] [P]*4 {text}", "this baseline implements the seed template only"
classes, words = zip(*(kv.split("=") for kv in info["labels"].split(",")))
word_ids = tok.convert_tokens_to_ids(list(words))
head = list(range(2, 6)) + [tok.mask_token_id] + list(range(6, 10))
PROMPT_POS = [1, 2, 3, 4, 6, 7, 8, 9]


@torch.no_grad()
def classify(texts):
    seqs = [[tok.cls_token_id] + head + tok.convert_tokens_to_ids(tok.tokenize(t))[: info["max_len"] - 11] + [tok.sep_token_id] for t in texts]
    L = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    emb = model.bert.embeddings.word_embeddings(ids)
    if vectors is not None:
        emb[:, PROMPT_POS] = vectors.unsqueeze(0)
    h = model.bert(inputs_embeds=emb, attention_mask=(ids != 0).long()).last_hidden_state[:, 5]
    probs = torch.softmax(model.cls(h)[:, word_ids], -1)
    return [{"label": classes[int(p.argmax())], "probs": dict(zip(classes, p.tolist()))} for p in probs]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if req.get("task") != a.task or not req.get("texts"):
                return self.reply(400, {"error": "bad request"})
            self.reply(200, {"task": a.task, "results": classify(req["texts"])})
        except Exception as e:  # noqa: BLE001 - a baseline: any failure is a 400
            self.reply(400, {"error": str(e)})


print(f"listening on http://127.0.0.1:{a.port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()
