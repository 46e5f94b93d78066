#!/usr/bin/env python3
"""llmq-calib's act_scales against an independent computation: PyTorch forward
hooks on the Hugging Face transformers model (SmoothQuant's calibration.py
method: per input channel max |x| of every nn.Linear input), over the same
token windows (every record of the corpus with BOS, truncated to seqlen).

usage: check_act_scales.py MODEL_DIR CORPUS.jsonl ACT_SCALES.safetensors [seqlen]
Exits non-zero if any module's relative L2 error exceeds 1e-4 (f32)."""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
model_dir, corpus, scales_path = sys.argv[1:4]
seqlen = int(sys.argv[4]) if len(sys.argv) > 4 else 512
dev = "cuda" if torch.cuda.is_available() else "cpu"
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager").to(dev).eval()
amax = {}


def hook(name):
    def fn(mod, inp, out):
        x = inp[0].detach().reshape(-1, inp[0].shape[-1]).abs().float().max(dim=0)[0]
        amax[name] = torch.maximum(amax[name], x) if name in amax else x
    return fn


for name, mod in model.named_modules():
    if isinstance(mod, torch.nn.Linear) and name.startswith("model.layers."):
        mod.register_forward_hook(hook(name))
records = [json.loads(l)["text"] for l in open(corpus, encoding="utf-8") if l.strip()]
with torch.no_grad():
    for text in records:
        ids = tok(text, return_tensors="pt", max_length=seqlen, truncation=True).input_ids.to(dev)
        model(ids)
ours = load_file(scales_path)
worst, bad = 0.0, 0
for name, ref in sorted(amax.items()):
    got = ours[name].to(dev)
    err = ((got - ref).norm() / ref.norm()).item()
    worst = max(worst, err)
    if not err < 1e-4:
        bad += 1
        print("FAIL %s rel L2 %.3g" % (name, err))
print("act_scales: %d modules, %d records, worst relative L2 %.3g: %s" %
      (len(amax), len(records), worst, "ok" if bad == 0 else "FAIL"))
sys.exit(1 if bad else 0)
