"""PyTorch's side of benches/gemm_vs_torch.py: `torch.matmul(a, b, out=c)` at
the shapes of crates/autograd/examples/gemm.rs (the same layouts: a
transposed operand is a transposed view), f32 and bf16, one JSON line per
shape. Each time is the fastest of several runs after one warm-up run, as
on the Rust side.

    python benches/torch/gemm.py --threads 1 [--dtypes f32,bf16] < shapes.jsonl
"""

import argparse
import json
import sys
import time

import torch


def fastest_secs(reps, f):
    """The fastest of `reps` runs after one warm-up run (other jobs only ever
    slow a run down); fewer runs when one takes over a second (PyTorch's bf16
    matmul runs at 1-20 GFLOP/s on CPUs without AVX512_BF16)."""
    t = time.perf_counter()
    f()
    reps = max(1, min(reps, int(2.0 / (time.perf_counter() - t))))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def operand(rows, cols, transposed, dtype):
    """(rows, cols) filled as the Rust side fills it, stored transposed if asked."""
    shape = (cols, rows) if transposed else (rows, cols)
    i = torch.arange(shape[0]).unsqueeze(1)
    j = torch.arange(shape[1]).unsqueeze(0)
    x = ((i * 7 + j * 3) % 13).to(torch.float32).mul(0.1).to(dtype)
    return x.t() if transposed else x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="f32,bf16", help="which of f32, bf16 to time")
    args = ap.parse_args()
    dtypes = [(torch.float32, "f32_gflops"), (torch.bfloat16, "bf16_gflops")]
    dtypes = [d for d in dtypes if d[1].split("_")[0] in args.dtypes.split(",")]
    torch.set_num_threads(args.threads)
    for line in sys.stdin:
        s = json.loads(line)
        m, k, n = s["m"], s["k"], s["n"]
        reps = 5 if m * n * k > 1 << 30 else 15
        flops = 2 * m * n * k
        out = {"name": s["name"], "threads": args.threads}
        for dtype, key in dtypes:
            a = operand(m, k, s["a_t"], dtype)
            b = operand(k, n, s["b_t"], dtype)
            c = torch.empty(m, n, dtype=dtype)
            secs = fastest_secs(reps, lambda: torch.matmul(a, b, out=c))
            out[key] = round(flops / secs / 1e9, 2)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    with torch.no_grad():
        main()
