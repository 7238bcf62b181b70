#!/usr/bin/env python3
"""PyTorch baseline of one `dpo train` step, on the work that benches/dpo_vs_torch.sh gives `dpo`.

  dpo_step.py --config small|medium --threads N [--steps 8] [--warmup 2]
  dpo_step.py --config small --write-inputs --rows 184 OUTDIR

One step: B = 8 preference pairs of random tokens (prompt P + response R: small 32 + 96,
medium 64 + 192), the policy forward on the 2B sequences (chosen and rejected in one batch),
the response log-probs (log_softmax + gather), the reference's forward on the same 2B sequences
under no_grad -- INSIDE the timed step, as in `dpo train`'s first epoch, where the lazy
reference cache computes a batch's reference log-probs in the step that first sees it --
the sigmoid DPO loss (beta 0.1), backward, AdamW (lr 1e-4, wd 0), no clipping. Float32.
The first --warmup steps (allocator, first touch of the buffers) are run but not timed.

Prints one JSON line: the median and fastest of the timed steps, in ms.

--write-inputs writes OUTDIR/init (the same nanoGPT-initialised model, as a checkpoint `dpo`
reads) and OUTDIR/prefs.jsonl (ROWS `_ids` rows of the same lengths), so that `dpo train
--batch-size 8` does the same work on new rows in every step.
"""
import argparse
import copy
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt  # noqa: E402

# config -> (prompt tokens, response tokens, pairs a step)
SHAPES = {"small": (32, 96, 8), "medium": (64, 192, 8)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(SHAPES), default="small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--write-inputs", metavar="OUTDIR")
    ap.add_argument("--rows", type=int, default=184)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P, R, B = SHAPES[args.config]
    cfg = gpt.GPTConfig(**gpt.PRESETS[args.config])
    gen = torch.Generator().manual_seed(0)
    policy = gpt.GPT(cfg).nanogpt_init_(gen)

    if args.write_inputs:
        gpt.save_checkpoint(policy, os.path.join(args.write_inputs, "init"))
        with open(os.path.join(args.write_inputs, "prefs.jsonl"), "w") as f:
            for _ in range(args.rows):
                row = {k: torch.randint(cfg.vocab_size, (n,), generator=gen).tolist()
                       for k, n in (("prompt_ids", P), ("chosen_ids", R), ("rejected_ids", R))}
                f.write(json.dumps(row) + "\n")
        return

    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    n_steps = args.warmup + args.steps
    prompts = torch.randint(cfg.vocab_size, (n_steps, B, P), generator=gen)
    chosen = torch.randint(cfg.vocab_size, (n_steps, B, R), generator=gen)
    rejected = torch.randint(cfg.vocab_size, (n_steps, B, R), generator=gen)

    def step(k):
        p = prompts[k]
        idx = torch.cat([torch.cat([p, chosen[k]], 1), torch.cat([p, rejected[k]], 1)], 0)  # (2B, P+R)
        labels = idx.clone()
        labels[:, :P] = -100  # only the response is scored
        logps = gpt.get_log_probs(policy(idx), labels)
        with torch.no_grad():
            ref_logps = gpt.get_log_probs(ref(idx), labels)
        loss = gpt.dpo_sigmoid_loss(logps[:B], logps[B:], ref_logps[:B], ref_logps[B:], 0.1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    ms = gpt.time_steps(step, n_steps, args.warmup)
    print(json.dumps({"config": args.config, "threads": args.threads, "torch": torch.__version__,
                      "steps": args.steps, "warmup": args.warmup,
                      "ms_median": round(statistics.median(ms), 2), "ms_min": round(min(ms), 2)}))


if __name__ == "__main__":
    main()
