#!/usr/bin/env python3
"""generate_vs_transformers.py [DPO_BINARY] [--threads 1,2] [--rounds 2] [--new-tokens 256]
                               [--model-dir DIR] [--dpo-model PATH] [--prompt TEXT] [--sides dpo,hf]
-- greedy generation with a KV cache on the real SmolLM2-135M-Instruct, `dpo generate` vs
transformers' `model.generate`, float32 on both sides.

The model: the float32 HF directory of benches/torch/smollm2_dir.py ($DPO_CACHE/smollm2-f32,
written once from scripts/fetch_smollm2.sh's GGUF, or --model-dir DIR); `dpo` reads the same
directory, or --dpo-model PATH (e.g. the GGUF itself: the same weights, dequantized by `dpo`).
The prompt: --prompt as a chat turn through the model's chat template, tokenized here once and
given to both sides as ids (`dpo generate --prompt-ids`, `input_ids`), so both start from the
same tokens.

  - `dpo generate --model PATH --prompt-ids IDS --max-new-tokens N --temperature 0` (greedy:
    temperature 0 is argmax; the KV cache is `dpo generate`'s only path), one process per run.
  - transformers `LlamaForCausalLM.generate(do_sample=False, max_new_tokens=N, min_new_tokens=N)`
    (its default DynamicCache, sdpa attention), float32, under torch.inference_mode, in a child
    process per run that loads the model and runs one untimed 8-token generation first.

What is timed: the decode rate, (N - 1) / (t(N) - t(1)), where t(n) is the wall time of a
generation of n new tokens: of the whole `dpo` process (load, prefill, n tokens), of the
`generate` call for transformers (prefill, n tokens). The difference takes out the model load
and the prompt's prefill (and the first token), so what is left on both sides is N - 1 steps of
one token through the 30 layers against a growing KV cache, plus the LM head and the argmax.

`dpo generate` stops at the tokenizer's end-of-sequence token (it has no flag to go on, as
min_new_tokens does), so the default prompt asks for a long text: the greedy completion of both
sides runs the full N tokens (checked: `dpo`'s finish_reason and new_tokens are reported, and the
rate uses the tokens each side made). The greedy tokens of the two sides are compared too:
`same_tokens` is how many leading tokens agree (float32 on both sides, different summation order:
a near-tie can flip a token late in the text, which then changes the rest).

For each thread count (`dpo --threads`, torch.set_num_threads), the runs alternate --rounds times
(`dpo`, transformers, `dpo`, ...). Reported: the median over rounds and the best round of each
side's tokens/s, and the ratio `dpo` tokens/s over transformers' (the speed-up of `dpo`; the
same as baseline time / `dpo` time). One JSON object on stdout, a JSON line per thread count to
stderr as it goes. Needs the packages of benches/requirements.txt in this Python.

Run:  VENV/bin/python benches/generate_vs_transformers.py target/release/dpo --threads 1,2 --rounds 2
      VENV/bin/python benches/generate_vs_transformers.py --sides hf --rounds 1 --threads 2   # Python side only
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import cpu

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT = ("Write a long, detailed story about a lighthouse keeper who finds a message in a bottle. "
          "Describe the island, the storms, the keeper's daily work and the people in the village.")

HF_CHILD = r"""
import json, sys, time, torch
from transformers import LlamaForCausalLM
model_dir, threads, ids_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
counts = [int(n) for n in sys.argv[4].split(",")]
torch.set_num_threads(threads)
model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
ids = torch.tensor([json.load(open(ids_path))])
mask = torch.ones_like(ids)

def generate(n):
    t0 = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                         min_new_tokens=n, pad_token_id=model.config.eos_token_id)
    return time.perf_counter() - t0, out[0, ids.shape[1]:].tolist()

with torch.inference_mode():
    generate(8)  # warm-up, not timed: first touch of the weights, the allocator
    result = {}
    for n in counts:
        seconds, new = generate(n)
        result[n] = {"seconds": seconds, "ids": new}
print(json.dumps(result))
"""


def smollm2_dir(model_dir):
    cmd = [sys.executable, os.path.join(HERE, "torch", "smollm2_dir.py")] + ([model_dir] if model_dir else [])
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]


def prompt_ids(model_dir, prompt):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                   tokenize=True, return_dict=True)["input_ids"]


def run_dpo(binary, model, ids, n, threads):
    """(wall seconds of the whole process, its JSON output)"""
    cmd = [binary, "--threads", str(threads), "generate", "--model", model, "--prompt-ids",
           ",".join(map(str, ids)), "--max-new-tokens", str(n), "--temperature", "0", "--print-ids"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return time.perf_counter() - t0, json.loads(out)


def run_hf(model_dir, ids_path, counts, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", HF_CHILD, model_dir, str(threads), ids_path,
                          ",".join(map(str, counts))], check=True, capture_output=True, text=True, env=env)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def same_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", nargs="?", default="target/release/dpo")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--model-dir", help="the float32 directory (default: smollm2_dir.py's)")
    ap.add_argument("--dpo-model", help="what `dpo generate --model` reads (default: --model-dir)")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--sides", default="dpo,hf", help="which sides run (default dpo,hf)")
    a = ap.parse_args()
    sides = a.sides.split(",")
    N = a.new_tokens
    import torch
    import transformers
    model_dir = smollm2_dir(a.model_dir)
    dpo_model = a.dpo_model or model_dir
    ids = prompt_ids(model_dir, a.prompt)
    results = {"bench": "generate", "cpu": cpu.describe(), "model": "SmolLM2-135M-Instruct, float32", "dpo_model": dpo_model, "prompt_tokens": len(ids),
               "new_tokens": N, "rounds": a.rounds, "greedy": True, "kv_cache": True,
               "timed": "decode rate (N - 1) / (t(N) - t(1)): model load and prefill taken out on both sides",
               "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
               "by_threads": {}}
    with tempfile.TemporaryDirectory() as root:
        ids_path = os.path.join(root, "prompt_ids.json")
        with open(ids_path, "w") as f:
            json.dump(ids, f)
        for threads in [int(t) for t in a.threads.split(",")]:
            t0 = time.time()
            rates = {"dpo": [], "hf": []}
            row = {"threads": threads}
            for _ in range(a.rounds):
                if "dpo" in sides:
                    t1, _ = run_dpo(a.binary, dpo_model, ids, 1, threads)
                    tn, out = run_dpo(a.binary, dpo_model, ids, N, threads)
                    made = out["new_tokens"]
                    rates["dpo"].append((made - 1) / (tn - t1))
                    row.update(dpo_new_tokens=made, dpo_finish_reason=out["finish_reason"])
                    dpo_ids = out.get("completion_ids", [])
                if "hf" in sides:
                    r = run_hf(model_dir, ids_path, [1, N], threads)
                    made = len(r[N]["ids"])
                    rates["hf"].append((made - 1) / (r[N]["seconds"] - r[1]["seconds"]))
                    row.update(hf_new_tokens=made, hf_generate_s=round(r[N]["seconds"], 2))
                    hf_ids = r[N]["ids"]
            for side, rs in rates.items():
                if rs:
                    row[f"{side}_tokens_per_s"] = round(statistics.median(rs), 2)
                    row[f"{side}_tokens_per_s_fastest"] = round(max(rs), 2)
                    row[f"{side}_runs"] = [round(x, 2) for x in rs]
            if rates["dpo"] and rates["hf"]:
                row["speedup"] = round(statistics.median(rates["dpo"]) / statistics.median(rates["hf"]), 2)
                row["speedup_fastest"] = round(max(rates["dpo"]) / max(rates["hf"]), 2)
                row["same_tokens"] = same_prefix(dpo_ids, hf_ids)
            row["wall_s"] = round(time.time() - t0, 1)
            results["by_threads"][threads] = row
            print(json.dumps(row), file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
