"""Copies a Hugging Face model directory with model.safetensors stored as float16.

    python3 bench/to_f16.py SRC_DIR DST_DIR

Needs torch and safetensors (the peer venv). Used once per shipped model (f16 storage halves
its size; ptune reads f16 weights into f32). Other files are copied unchanged."""
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_file() and f.name != "model.safetensors":
        shutil.copy(f, dst / f.name)
tensors = load_file(src / "model.safetensors")
half = {k: v.to(torch.float16).contiguous() for k, v in tensors.items()}
for k, v in half.items():
    if not torch.isfinite(v).all():
        sys.exit(f"{k}: not representable in float16")
save_file(half, dst / "model.safetensors", metadata={"format": "pt"})
print(f"{dst / 'model.safetensors'}: {len(half)} tensors as float16")
