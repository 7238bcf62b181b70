#!/usr/bin/env python3
"""PyTorch baseline of one `dpo sft` step, on the shapes that benches/sft_vs_torch.sh gives `dpo`.

  sft_step.py --config small|gpt2 --threads N [--steps 6] [--warmup 2] [--autocast bf16]

One step: B sequences of T random tokens (small 16 x 128; gpt2, the 124M GPT-2, 4 x 64 as
llm.c's CPU trainer), forward, mean cross-entropy over every position, backward, AdamW (lr 1e-4,
wd 0, no clipping). Float32, or with --autocast bf16 the forward under
torch.autocast("cpu", torch.bfloat16): bf16 matmuls on oneDNN, float32 weights and optimizer,
PyTorch's usual mixed precision on a CPU. The first --warmup steps are run but not timed.

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
SHAPES = {"small": (16, 128), "medium": (8, 256), "gpt2": (4, 64)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(SHAPES), default="small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--autocast", choices=["bf16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B, T = SHAPES[args.config]
    cfg = gpt.GPTConfig(**gpt.PRESETS[args.config])
    gen = torch.Generator().manual_seed(0)
    model = gpt.GPT(cfg).nanogpt_init_(gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    n_steps = args.warmup + args.steps
    data = torch.randint(cfg.vocab_size, (n_steps, B, T + 1), generator=gen)

    def step(k):
        x, y = data[k, :, :-1], data[k, :, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast == "bf16"):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), y.reshape(-1))
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
