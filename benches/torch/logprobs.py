#!/usr/bin/env python3
"""PyTorch baseline of the sequence log-prob kernel (benches/logprobs.rs): summed response
log-probs, forward + backward, for logits (16, 128, 32000) float32 (262 MB), labels -100 on the
first 32 positions (a DPO-like prompt mask).

  logprobs.py --threads N [--iters 5]

The usual PyTorch formulation (TRL's, and gpt.get_log_probs): log_softmax over the vocabulary,
then gather; it materializes a full-size log-softmax, and the backward of the slice another
full-size tensor. The gradient is taken with torch.autograd.grad (no copy into logits.grad).
The first forward + backward (first touch of every buffer) is not timed.

Prints one JSON line: the median and fastest of the timed iterations, in ms, and the peak RSS
growth of the first forward + backward over the logits.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt  # noqa: E402

B, T, V, PROMPT = 16, 128, 32000, 32


def rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1e3
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logits = torch.randn(B, T, V).requires_grad_(True)
    labels = torch.randint(V, (B, T))
    labels[:, :PROMPT] = -100
    base = rss_mb("VmRSS")
    ms = []
    for i in range(args.iters + 1):
        grad = None  # free the previous gradient first
        t0 = time.perf_counter()
        out = gpt.get_log_probs(logits, labels)
        (grad,) = torch.autograd.grad(out.sum(), logits)
        dt = 1e3 * (time.perf_counter() - t0)
        if i == 0:
            peak_growth = rss_mb("VmHWM") - base
        else:
            ms.append(dt)
    del grad
    print(json.dumps({"threads": args.threads, "torch": torch.__version__, "iters": args.iters,
                      "ms_median": round(statistics.median(ms), 1), "ms_min": round(min(ms), 1),
                      "peak_rss_growth_mb": round(peak_growth, 1)}))


if __name__ == "__main__":
    main()
