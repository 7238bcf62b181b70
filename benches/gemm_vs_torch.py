#!/usr/bin/env python3
"""GEMM rates against PyTorch's at the shapes of a training step, f32 and
bf16, alternating the two sides in the same run.

Ours: `crates/autograd/examples/gemm.rs --json` (f32: kernels::gemm, on
the FMA kernels of kernels::sgemm; bf16: kernels::bf16, inputs rounded as
they are packed, on `vdpbf16ps` or the same FMA kernels). PyTorch:
benches/torch/gemm.py, `torch.matmul(a, b, out=c)` on the same layouts (f32
on MKL, bf16 on oneDNN on x86). Every round runs ours, then PyTorch, at each
thread count; a shape's figure is its median over the rounds. Prints the CPU
(vendor, family, model, the features the kernels choose between), then one
JSON line per (model, threads, shape) with both rates and their ratios
(ours / PyTorch: above 1 is faster).

    PYTHON benches/gemm_vs_torch.py [--models gpt2,smollm2] [--threads 1,2] [--rounds 3] [--dtypes f32,bf16]

(`--dtypes f32` skips PyTorch's bf16 side, which takes most of the time on
CPUs without AVX512_BF16: 0.5-20 GFLOP/s.)

PYTHON has torch (benches/requirements.txt).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_ours(threads, model):
    exe = os.path.join(ROOT, "target", "release", "examples", "gemm")
    out = subprocess.run([exe, str(threads), model, "--json"], check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def run_torch(threads, shapes, dtypes):
    stdin = "".join(json.dumps(s) + "\n" for s in shapes)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benches", "torch", "gemm.py"), "--threads", str(threads),
                          "--dtypes", dtypes],
                         input=stdin, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="gpt2,smollm2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtypes", default="f32,bf16")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "gemm", "-p", "autograd"], cwd=ROOT, check=True)
    import torch
    print(cpu.describe())
    print(f"torch {torch.__version__}; {args.rounds} rounds, ours then PyTorch in each", flush=True)
    for model in args.models.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            ours, theirs = [], []
            for _ in range(args.rounds):
                o = run_ours(threads, model)
                ours.append(o)
                theirs.append(run_torch(threads, o, args.dtypes))
            for i, shape in enumerate(ours[0]):
                row = {"model": model, "threads": threads, "name": shape["name"],
                       "mkn": f"{shape['m']}x{shape['k']}x{shape['n']}"}
                for key in (f"{d}_gflops" for d in args.dtypes.split(",")):
                    mine = statistics.median(r[i][key] for r in ours)
                    ref = statistics.median(r[i][key] for r in theirs)
                    tag = key.split("_")[0]
                    row[f"ours_{tag}"] = mine
                    row[f"torch_{tag}"] = ref
                    row[f"ratio_{tag}"] = round(mine / ref, 3)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
