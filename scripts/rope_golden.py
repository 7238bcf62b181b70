"""Golden values of rotary position embeddings from transformers, for
crates/autograd/tests/rope_golden.rs.

Run with the benchmark venv (torch 2.15, transformers 5.24):

    /work/venv-bench/bin/python scripts/rope_golden.py \
        > crates/autograd/tests/data/rope_golden.json

For each config: the float32 inv_freq of LlamaRotaryEmbedding (as bit
patterns, to be matched exactly), the cos/sin it gives at a few positions in
0..10000, and apply_rotary_pos_emb of a small random q (one row per
position, 2 heads). Also inv_freq alone for more (theta, head_dim) pairs.
"""

import json
import sys

import numpy as np
import torch
import transformers
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

HEAD_DIM = 64
N_HEADS = 2
POSITIONS = [0, 1, 2, 7, 100, 511, 1000, 2047, 4095, 8191, 8192, 9999]


def config(theta, head_dim, rope_type="default", **scaling):
    params = {"rope_type": rope_type, "rope_theta": theta, **scaling}
    return LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        head_dim=head_dim,
        max_position_embeddings=16384,
        rope_parameters=params,
    )


def bits(t):
    return [int(v) for v in t.detach().numpy().astype(np.float32).view(np.uint32)]


def floats(t):
    # the shortest decimal that reads back as the same float32 (small JSON)
    return [float(str(v)) for v in t.detach().reshape(-1).numpy().astype(np.float32)]


def case(name, cfg, q):
    rope = LlamaRotaryEmbedding(cfg)
    pos = torch.tensor([POSITIONS])
    cos, sin = rope(q, pos)  # (1, T, hd)
    # q: (1, N_HEADS, T, hd), as in LlamaAttention
    q_embed, _ = apply_rotary_pos_emb(q, q, cos, sin)
    return {
        "name": name,
        "rope_parameters": cfg.rope_parameters,
        "head_dim": cfg.head_dim,
        "attention_scaling": float(rope.attention_scaling),
        "inv_freq_bits": bits(rope.inv_freq),
        "positions": POSITIONS,
        "cos": floats(cos[0]),  # (T, hd)
        "sin": floats(sin[0]),
        "q": floats(q[0].transpose(0, 1)),  # (T, N_HEADS * hd): our row layout
        "q_embed": floats(q_embed[0].transpose(0, 1)),
    }


def main():
    torch.manual_seed(0)
    q = torch.randn(1, N_HEADS, len(POSITIONS), HEAD_DIM)
    llama3 = dict(
        factor=32.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    )
    cases = [
        case("default_theta_1e4", config(10000.0, HEAD_DIM), q),
        case("default_theta_1e5", config(100000.0, HEAD_DIM), q),
        case("llama3_theta_5e5", config(500000.0, HEAD_DIM, "llama3", **llama3), q),
    ]
    # inv_freq alone: the (theta, head_dim) pairs of SmolLM2, Qwen2.5/3 and Llama 3.2
    inv_freq = []
    for theta in [10000.0, 100000.0, 500000.0, 1000000.0, 50000.0, 123456.0]:
        for hd in [64, 128]:
            for rope_type, scaling in [("default", {}), ("llama3", llama3)]:
                rope = LlamaRotaryEmbedding(config(theta, hd, rope_type, **scaling))
                inv_freq.append(
                    {
                        "theta": theta,
                        "head_dim": hd,
                        "rope_type": rope_type,
                        "inv_freq_bits": bits(rope.inv_freq),
                    }
                )
    out = {
        "generator": "scripts/rope_golden.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "n_heads": N_HEADS,
        "cases": cases,
        "inv_freq": inv_freq,
    }
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
