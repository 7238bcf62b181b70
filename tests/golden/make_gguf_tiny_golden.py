#!/usr/bin/env python3
"""make_gguf_tiny_golden.py OUTDIR -- tiny llama / qwen2 / qwen3 GGUFs and what transformers loads from them.

Pinned: gguf==0.19.0, transformers==5.24.0, torch, numpy (recorded in each OUTDIR/tiny_ARCH.json).

For each architecture, writes with gguf-py's GGUFWriter a one-layer model with random weights and
a byte-level BPE tokenizer (the 256 byte tokens, a few merges, control tokens `<|endoftext|>`,
`<|im_start|>`, `<|im_end|>` and a user-defined `<think>`), the metadata llama.cpp writes:

  tiny_llama.gguf  arch llama: head_dim from rope.dimension_count, q/k stored permuted (as llama.cpp's
                   convert does), tied head (no output.weight), pre-tokenizer "llama-bpe",
                   add_bos_token; weights Q8_0 / F16 / BF16 / Q4_0 / Q4_1, norms F32
  tiny_qwen2.gguf  arch qwen2: q/k/v biases, an untied head (output.weight), pre "qwen2", rope
                   scaling metadata (yarn); weights F16 / Q8_0
  tiny_qwen3.gguf  arch qwen3: q_norm / k_norm, head_dim 128 in attention.key_length (transformers
                   does not read that key but takes Qwen3Config's default head_dim, 128, which every
                   Qwen3 has: another head_dim does not load there), pre "qwen2"; weights F32 / Q8_0

then loads each with transformers (`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...,
dtype=float32)` and `AutoTokenizer`) and writes OUTDIR/tiny_ARCH.json: the HF config, every
state-dict tensor's name, shape and offset into OUTDIR/tiny_ARCH.f32 (its values, little-endian
f32), and the ids and decodes of a few texts. crates/transformer/tests/gguf.rs
(gguf_tiny_models_match_transformers) compares transformer::gguf's checkpoint bitwise.

Run:  VENV/bin/python tests/golden/make_gguf_tiny_golden.py tests/golden/gguf
"""
import json
import os
import sys
from importlib.metadata import version

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ w", "r e", "a n", "1 2", "Ġ Ġ",
          "ĠĠ ĠĠ", "Ċ Ċ"]
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_DEFINED = ["<think>"]
TEXTS = ["Hello there, the winner is in the water.", "  two  spaces\n\nand newlines\n",
         "digits 12345 1212", "<|im_start|>user\nHi<|im_end|>\n", "<think>hmm</think> done",
         "naïve 日本 😀", ""]


def vocabulary():
    spelling = bytes_to_unicode()
    tokens = [spelling[b] for b in range(256)]
    for merge in MERGES:
        a, b = merge.split(" ")
        tokens.append(a + b)
    types = [1] * len(tokens)
    for token in CONTROL:
        tokens.append(token)
        types.append(3)
    for token in USER_DEFINED:
        tokens.append(token)
        types.append(4)
    return tokens, types


def llama_cpp_permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_model(path, arch, rng):
    tokens, types = vocabulary()
    vocab = len(tokens)
    hidden, ffn = 32, 64
    heads, kv_heads = {"llama": (4, 2), "qwen2": (2, 1), "qwen3": (2, 1)}[arch]
    head_dim = 128 if arch == "qwen3" else hidden // heads

    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"tiny {arch}")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0 if arch != "qwen3" else 1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    if arch == "llama":
        w.add_vocab_size(vocab)
        w.add_rope_dimension_count(head_dim)
    if arch == "qwen3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if arch == "qwen2":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(4.0)
        w.add_rope_scaling_orig_ctx_len(32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre({"llama": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2"}[arch])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(tokens.index("<|im_start|>") if arch == "llama" else tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(arch == "llama")
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")

    def tensor(name, shape, qtype, scale=0.5):
        values = (rng.normal(size=shape) * scale).astype(np.float32)
        if name.endswith(("attn_q.weight", "attn_k.weight")) and arch == "llama":
            values = llama_cpp_permute(values, heads if "attn_q" in name else kv_heads)
        if qtype == T.F32:
            w.add_tensor(name, values)
        elif qtype == T.F16:
            w.add_tensor(name, values.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    weights = {"llama": [T.Q8_0, T.F16, T.BF16, T.Q4_0, T.Q4_1], "qwen2": [T.F16, T.Q8_0],
               "qwen3": [T.F32, T.Q8_0]}[arch]
    pick = lambda i: weights[i % len(weights)]  # noqa: E731
    tensor("token_embd.weight", (vocab, hidden), pick(0))
    tensor("blk.0.attn_norm.weight", (hidden,), T.F32)
    tensor("blk.0.attn_q.weight", (heads * head_dim, hidden), pick(1))
    tensor("blk.0.attn_k.weight", (kv_heads * head_dim, hidden), pick(2))
    tensor("blk.0.attn_v.weight", (kv_heads * head_dim, hidden), pick(3))
    tensor("blk.0.attn_output.weight", (hidden, heads * head_dim), pick(4))
    if arch == "qwen2":
        tensor("blk.0.attn_q.bias", (heads * head_dim,), T.F32)
        tensor("blk.0.attn_k.bias", (kv_heads * head_dim,), T.F32)
        tensor("blk.0.attn_v.bias", (kv_heads * head_dim,), T.F32)
    if arch == "qwen3":
        tensor("blk.0.attn_q_norm.weight", (head_dim,), T.F32)
        tensor("blk.0.attn_k_norm.weight", (head_dim,), T.F32)
    tensor("blk.0.ffn_norm.weight", (hidden,), T.F32)
    tensor("blk.0.ffn_gate.weight", (ffn, hidden), pick(5))
    tensor("blk.0.ffn_up.weight", (ffn, hidden), pick(6))
    tensor("blk.0.ffn_down.weight", (hidden, ffn), pick(7))
    tensor("output_norm.weight", (hidden,), T.F32)
    if arch == "qwen2":
        tensor("output.weight", (vocab, hidden), T.Q8_0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(7)
    for arch in ["llama", "qwen2", "qwen3"]:
        name = f"tiny_{arch}.gguf"
        write_model(os.path.join(outdir, name), arch, rng)
        model = AutoModelForCausalLM.from_pretrained(outdir, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(outdir, gguf_file=name)
        tensors, values, offset = [], [], 0
        for tname, t in model.state_dict().items():
            flat = t.detach().to(torch.float32).reshape(-1).numpy()
            tensors.append({"name": tname, "shape": list(t.shape), "offset": offset, "count": int(flat.size)})
            values.append(flat)
            offset += flat.size
        np.concatenate(values).astype("<f4").tofile(os.path.join(outdir, f"tiny_{arch}.f32"))
        config = model.config.to_dict()
        texts = []
        for text in TEXTS:
            ids = tokenizer(text).input_ids
            texts.append({"text": text, "ids": ids,
                          "decoded": tokenizer.decode(ids, skip_special_tokens=False)})
        out = {
            "gguf_file": name,
            "versions": {"gguf": version("gguf"), "transformers": version("transformers"),
                         "torch": torch.__version__, "numpy": np.__version__},
            "config": {k: v for k, v in config.items()
                       if not k.startswith("_") and k not in ("transformers_version", "quantization_config")},
            "tensors": tensors,
            "vocab_size": len(tokenizer),
            "chat_template": tokenizer.chat_template,
            "texts": texts,
        }
        with open(os.path.join(outdir, f"tiny_{arch}.json"), "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "gguf"))
