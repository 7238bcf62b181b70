#!/usr/bin/env python3
"""PyTorch baseline of one `dpo sft` step, on the shapes that benches/sft_vs_torch.sh gives `dpo`.

  sft_step.py --config small|gpt2|smollm2 --threads N [--steps 6] [--warmup 2] [--autocast bf16]
              [--model-dir DIR]

One step: B sequences of T random tokens (small 16 x 128; gpt2, the 124M GPT-2, 4 x 64 as
llm.c's CPU trainer; smollm2, the real SmolLM2-135M-Instruct, 4 x 256), forward, mean
cross-entropy over every position, backward, AdamW (lr 1e-4, wd 0, no clipping).
The GPT configs are benches/torch/gpt.py's model; smollm2 is transformers' own
`LlamaForCausalLM` (its default attention, sdpa; no KV cache) loaded from the float32 directory
of benches/torch/smollm2_dir.py (--model-dir, default $DPO_CACHE/smollm2-f32, written if absent).
Float32, or with --autocast bf16 the forward under torch.autocast("cpu", torch.bfloat16): bf16
matmuls on oneDNN, float32 weights and optimizer, PyTorch's usual mixed precision on a CPU. The first --warmup steps are run but not timed.

Prints one JSON line: the median and fastest of the timed steps, in ms.
"""
import argparse
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt  # noqa: E402

# config -> (batch, sequence length); the same table is in benches/sft_vs_torch.sh
SHAPES = {"small": (16, 128), "medium": (8, 256), "gpt2": (4, 64), "smollm2": (4, 256)}


def smollm2(model_dir):
    """transformers' LlamaForCausalLM of SmolLM2-135M-Instruct, float32: returns (forward, module,
    vocab size), forward(idx) -> logits (B, T, V) as gpt.GPT's call."""
    import subprocess
    from transformers import LlamaForCausalLM
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, os.path.join(here, "smollm2_dir.py")] + ([model_dir] if model_dir else [])
    model_dir = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    llama = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    llama.train()  # no dropout in SmolLM2; train() as a training loop would have it
    return (lambda idx: llama(input_ids=idx, use_cache=False).logits), llama, llama.config.vocab_size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(SHAPES), default="small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--autocast", choices=["bf16"])
    ap.add_argument("--model-dir", help="smollm2: the float32 directory (default: smollm2_dir.py's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, T = SHAPES[args.config]
    gen = torch.Generator().manual_seed(0)
    if args.config == "smollm2":
        model, module, vocab_size = smollm2(args.model_dir)
    else:
        cfg = gpt.GPTConfig(**gpt.PRESETS[args.config])
        model = module = gpt.GPT(cfg).nanogpt_init_(gen)
        vocab_size = cfg.vocab_size
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    n_steps = args.warmup + args.steps
    data = torch.randint(vocab_size, (n_steps, B, T + 1), generator=gen)

    def step(k):
        x, y = data[k, :, :-1], data[k, :, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast == "bf16"):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    ms = gpt.time_steps(step, n_steps, args.warmup)
    print(json.dumps({"config": args.config, "threads": args.threads, "autocast": args.autocast,
                      "torch": torch.__version__, "batch": B, "seq": T, "steps": args.steps,
                      "warmup": args.warmup, "ms_median": round(statistics.median(ms), 1),
                      "ms_min": round(min(ms), 1)}))


if __name__ == "__main__":
    main()
