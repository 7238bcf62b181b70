#!/usr/bin/env python3
"""A Qwen2.5-0.5B-shaped Hugging Face directory with random weights, and random `_ids` pairs.

  qwen25_dir.py OUT WEIGHTS LAYERS PAIRS_FILE N_PAIRS

transformers' Qwen2ForCausalLM with Qwen2.5-0.5B's shape (vocab 151936, hidden 896, LAYERS
layers (24 in the real one), 14 heads / 2 kv heads of 64, intermediate 4864, tied embeddings,
q/k/v biases, rope theta 1e6, RMSNorm eps 1e-6: 494.0M params at 24 layers), weights drawn
N(0, 0.02^2) (the norms 1, the biases too, so they are exercised), saved as WEIGHTS (f32 or
bf16) into OUT; no tokenizer. PAIRS_FILE gets N_PAIRS rows of 256 prompt + 256 chosen + 256
rejected random ids (seeded). Prints the parameter count. Used by benches/qwen25_memory.sh and
benches/lora_vs_full.py.
"""
import json
import os
import random
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smollm2_dir import add_rope_theta  # noqa: E402  (rope_theta at the top level too, as the hub's file)

PROMPT_TOKENS = RESPONSE_TOKENS = 256


def write_qwen25(out, weights="f32", layers=24):
    """The model directory OUT; returns its parameter count."""
    config = Qwen2Config(vocab_size=151936, hidden_size=896, num_hidden_layers=layers, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                         bos_token_id=151643, eos_token_id=151645, initializer_range=0.02)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    model.to_empty(device="cpu")
    model.tie_weights()  # to_empty leaves the shared embedding / LM head shared; made sure
    with torch.no_grad():
        for name, p in model.named_parameters():  # the tied matrix appears once
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:  # matrices and the q/k/v biases (nonzero, so that they are exercised)
                p.normal_(0.0, 0.02)
    model = model.to(torch.bfloat16 if weights == "bf16" else torch.float32)
    attn = model.model.layers[0].self_attn
    assert all(p.bias is not None for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(out)
    add_rope_theta(os.path.join(out, "config.json"))
    return sum(p.numel() for p in model.parameters())


def write_pairs(path, n_pairs, vocab=151936):
    """n_pairs random `_ids` preference rows of 256 + 256 + 256 tokens."""
    rng = random.Random(0)
    ids = lambda n: [rng.randrange(vocab) for _ in range(n)]  # noqa: E731
    with open(path, "w") as f:
        for _ in range(n_pairs):
            f.write(json.dumps({"prompt_ids": ids(PROMPT_TOKENS), "chosen_ids": ids(RESPONSE_TOKENS),
                                "rejected_ids": ids(RESPONSE_TOKENS)}) + "\n")


if __name__ == "__main__":
    out, weights, layers, pairs, n_pairs = sys.argv[1:6]
    params = write_qwen25(out, weights, int(layers))
    write_pairs(pairs, int(n_pairs))
    print(params)
