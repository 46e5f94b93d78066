#!/usr/bin/env python3
"""Round trip of a GPTQ checkpoint written by llmq-gptq: dequantize every
quantized linear with an independent PyTorch implementation of the GPTQ
v1/v2 layout (FORMATS.md) and compare with llmq's own fake-quant weights
(written by llmq-gptq --dump as <module>.Wq.f32): they must be equal bit for
bit in fp16.

  W[n, k] = scales[g, n] * (q[k, n] - z[g, n]),  g = g_idx[k]
  q: qweight int32 [K*b/32, N], value k of column n at bit b*k of the
     column's little-endian bit stream (3-bit values straddle words);
  z: qzeros int32 [ng, N*b/32], along N the same way; v1 stores z - 1.

usage: check_gptq_roundtrip.py GPTQ_DIR DUMP_DIR"""
import glob
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

out_dir, dump_dir = sys.argv[1:3]
cfg = json.load(open(os.path.join(out_dir, "config.json")))["quantization_config"]
bits, v2 = cfg["bits"], cfg.get("checkpoint_format", "gptq") == "gptq_v2"
tensors = {}
for f in sorted(glob.glob(os.path.join(out_dir, "*.safetensors"))):
    tensors.update(load_file(f))


def unpack(words, count, axis):
    """b-bit values of the bit streams running along `axis` of an int32 array."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    if axis == 1:
        w = w.t()
    i = torch.arange(count, dtype=torch.int64)
    bit = i * bits
    word, shift = bit // 32, bit % 32
    lo = w[word] >> shift.unsqueeze(-1)
    hi_word = torch.clamp(word + 1, max=w.shape[0] - 1)
    hi = (w[hi_word] << (32 - shift).unsqueeze(-1)) * (shift + bits > 32).unsqueeze(-1)
    vals = (lo | hi) & ((1 << bits) - 1)
    return vals if axis == 0 else vals.t()


modules = sorted(k[: -len(".qweight")] for k in tensors if k.endswith(".qweight"))
bad = 0
for m in modules:
    qw, qz, sc, gi = (tensors[m + s] for s in (".qweight", ".qzeros", ".scales", ".g_idx"))
    K, N = gi.shape[0], sc.shape[1]
    q = unpack(qw, K, 0)                      # [K, N]
    z = unpack(qz, N, 1) + (0 if v2 else 1)   # [ng, N]
    g = gi.to(torch.int64)
    W = (sc.float()[g] * (q.float() - z.float()[g])).t().contiguous()  # [N, K]
    ref = torch.from_numpy(np.fromfile(os.path.join(dump_dir, m + ".Wq.f32"), dtype=np.float32).reshape(N, K))
    a, b = W.half().view(torch.int16), ref.half().view(torch.int16)
    diff = (a != b).sum().item()
    if diff:
        bad += 1
        print("FAIL %s: %d of %d fp16 weights differ" % (m, diff, a.numel()))
print("gptq round trip (%d bits, %s): %d modules, %s" %
      (bits, "v2" if v2 else "v1", len(modules), "bit-exact in fp16" if bad == 0 else "%d differ" % bad))
sys.exit(1 if bad or not modules else 0)
