#!/usr/bin/env python3
"""dpo_vs_trl.py [DPO_BINARY] [--model gpt2-random|smollm2] [--steps N] [--threads 1,2] [--rounds R]
                 [--bf16] [--trl-bf16] [--precompute off|on|both] [--fresh-rows on|off] [--sides dpo,trl]
                 [--model-dir DIR] [--dpo-model PATH]
-- one DPO step, `dpo` vs TRL, on a random GPT-2 124M or on the real SmolLM2-135M-Instruct.

The batch is 4 pairs of 128 prompt + 128 response tokens (random ids, `_ids` rows, so no
tokenizer is involved), AdamW, lr 1e-6, no truncation, the sigmoid loss (beta 0.1), gradient
clipping at 1 (both sides' default). DPO_BINARY defaults to target/release/dpo.

--model gpt2-random (default): a transformers `GPT2LMHeadModel` of the default `GPT2Config`
(GPT-2 124M: 12 layers, 768 wide, 50257 ids, 1024 positions) with random weights, saved with
`save_pretrained` into a temporary directory: `dpo` reads that directory as it is (docs/spec.md
section 2.1), and the same directory is TRL's policy and reference.

--model smollm2: the real SmolLM2-135M-Instruct (Llama: 30 layers, 576 wide, 9 heads / 3 kv
heads, 49152 ids, tied embeddings; 134.5M params), the float32 HF directory that
benches/torch/smollm2_dir.py writes from the GGUF of scripts/fetch_smollm2.sh (into
$DPO_CACHE/smollm2-f32 once, or --model-dir DIR). `dpo` and TRL read the same directory, so both
sides start from the same float32 weights; --dpo-model PATH gives `dpo` another copy of them, such
as the GGUF file itself (the same Q4_1 weights, dequantized by `dpo`).

  - `dpo train --policy DIR --ref DIR`: the reference log-probs of a batch are computed the first
    time the batch is seen and cached (docs/dpo.md section 10); the step time is `step_ms` of its
    metrics log. With `--bf16`, `dpo train --precision bf16` is timed too (docs/bf16.md).
  - TRL 1.16 `DPOTrainer` on CPU, float32 (`bf16=False`), the same rows, with
    `precompute_ref_log_probs` off (the reference runs in every step) and/or on (once, before
    training); the step time is measured around each `training_step` by a callback. With
    `--trl-bf16`, also with `bf16=True` (torch.autocast bf16 on the CPU through accelerate:
    bf16 matmuls, float32 weights and AdamW, PyTorch's mixed precision), to set against
    `dpo --precision bf16`.

Where the reference model's forward is, which --fresh-rows decides:

  --fresh-rows off (default for gpt2-random, the row as it always was): the data is the one batch
    of 4 rows, repeated every step. `dpo` runs the reference forward in step 1 (not timed) and
    every later step reuses the cache; TRL with precompute on runs it before training. So with
    precompute on, neither side's timed step holds a reference forward: the like-for-like
    comparison of that setting. With precompute off, TRL's steps hold one and `dpo`'s do not.
  --fresh-rows on (default for smollm2, whose precompute default is off): the data has 4 x N
    rows, one epoch, so every step of `dpo` sees new rows and computes their reference log-probs
    inside the step (as in a real first epoch), and TRL with precompute off runs the reference
    in every step: the reference forward is INSIDE the timed step on both sides (the goal's
    "reference each step"; benches/speed_table.sh's SmolLM2 rows use it).

For each thread count (torch.set_num_threads / `dpo --threads`), each run's median step time of
steps 2..N (step 1 warms up: the allocator, the first touch of the buffers) is reported with the
fastest of them, and TRL's step time over `dpo`'s (the speed-up of `dpo`). With --rounds R the
runs alternate R times (`dpo` f32, TRL f32, `dpo` bf16, TRL bf16, again), and the median is the
median over rounds of each run's median, the fastest the fastest step of all rounds (other jobs
only ever slow a step down, so on a busy machine the fastest steps compare better).
Prints one JSON object (a JSON line per thread count to stderr as it goes). Needs the packages
of benches/requirements.txt in this Python. --sides trl skips `dpo` (a check of the Python side).

Run:  VENV/bin/python benches/dpo_vs_trl.py target/release/dpo --steps 4 --bf16
      VENV/bin/python benches/dpo_vs_trl.py target/release/dpo --model smollm2 --steps 3 --bf16 --trl-bf16
      VENV/bin/python benches/dpo_vs_trl.py --model smollm2 --steps 1 --threads 2 --sides trl --trl-bf16

SmolLM2: not measured yet (`dpo` reads Llama checkpoints from the work now under way). The
Python side was checked with --steps 1 --threads 2 --sides trl --trl-bf16 on a 2-core machine
busy with builds (load average 8): it runs, and one SmolLM2 step of TRL (step 1, not a
steady-state step, on a busy machine: no measurement) took 177 s f32 and 167 s bf16.

GPT-2 runs (as dpo_vs_trl_gpt2.py, the same work):
Two runs on a 2-core AMD EPYC (torch 2.15.0, transformers 5.24.0, trl 1.16.0), ms per step.
Run A, idle machine, with `dpo` before the bf16 packing and allocator work of issue 11's second pass:

  threads | dpo f32 | TRL, precompute off | TRL, precompute on | speed-up (off / on) | dpo bf16 (vs TRL on)
  1       |  9203   | 42084               | 33025              | 4.57x / 3.59x       | 5044 (6.55x)
  2       |  4871   | 23748               | 18668              | 4.88x / 3.83x       | 3568 (5.23x)

Run B, with that work (the 2-thread row gained nothing over 1 thread on either side: the second
core was taken by other work, so only the 1-thread row is a fair measure):

  1       |  6906   | 39569               | 31661              | 5.73x / 4.58x       | 3726 (8.50x)
  2       |  6370   | 38909               | 32083              | 6.11x / 5.04x       | 4182 (7.67x)

An earlier run with another job on the second core gave 4.40x / 3.21x at one thread.

Run C, by benches/speed_table.sh (--steps 3 --precompute on) on a 2-core Intel Xeon (family 6,
model 207) shared with other jobs (load average 4-7), at revision 17116b6:

  1       | 15571   |                     | 24097              |   -   / 1.55x       | 16823 (1.43x)
  2       | 12200   |                     | 27188              |   -   / 2.23x       | 16372 (1.66x)

Runs A and B are hard to square with the work, to be re-measured: `dpo`'s step is about 1 TFLOP (policy forward and backward on
4 x (128 + 2 x 128) tokens with prefix sharing, the LM head on the 4 x 256 scored positions),
so 6906 ms would be about 150 GFLOP/s on one core, above the 79 GFLOP/s its GPT-2 SFT step reached
there. Run C's 15571 ms is about 65 GFLOP/s.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import cpu

PROMPT_TOKENS, RESPONSE_TOKENS, PAIRS = 128, 128, 4
HERE = os.path.dirname(os.path.abspath(__file__))


def make_model(model, root, model_dir=None):
    """The checkpoint directory both sides read, and its vocabulary size."""
    if model == "gpt2-random":
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
        torch.manual_seed(0)
        model_dir = os.path.join(root, "gpt2-random")
        GPT2LMHeadModel(GPT2Config()).save_pretrained(model_dir)
    else:  # smollm2: written once, then reused (benches/torch/smollm2_dir.py)
        cmd = [sys.executable, os.path.join(HERE, "torch", "smollm2_dir.py")] + ([model_dir] if model_dir else [])
        model_dir = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    with open(os.path.join(model_dir, "config.json")) as f:
        return model_dir, json.load(f)["vocab_size"]


def make_data(root, vocab, n_rows):
    """n_rows random `_ids` pairs of PROMPT_TOKENS + RESPONSE_TOKENS (the first PAIRS are the
    GPT-2 row's one batch, as before)."""
    rng = random.Random(0)
    ids = lambda n: [rng.randrange(vocab) for _ in range(n)]  # noqa: E731
    rows = [{"prompt_ids": ids(PROMPT_TOKENS), "chosen_ids": ids(RESPONSE_TOKENS),
             "rejected_ids": ids(RESPONSE_TOKENS)} for _ in range(n_rows)]
    data = os.path.join(root, f"pairs-{n_rows}.jsonl")
    with open(data, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return data


def time_dpo(binary, model_dir, data, threads, steps, root, precision="f32"):
    out = os.path.join(root, f"dpo-out-{threads}-{precision}")
    metrics = os.path.join(root, f"dpo-metrics-{threads}-{precision}.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)  # --metrics appends; a later round starts afresh
    # --batch-size PAIRS: with PAIRS rows the one batch repeats; with PAIRS x steps rows, one
    # epoch gives every step new rows, whose reference forward runs in that step.
    cmd = [binary, "--threads", str(threads), "train", "--policy", model_dir, "--ref", model_dir,
           "--data", data, "--out", out, "--steps", str(steps), "--batch-size", str(PAIRS),
           "--lr", "1e-6", "--max-prompt-length", str(PROMPT_TOKENS), "--metrics", metrics,
           "--no-progress"] + ([] if precision == "f32" else ["--precision", precision])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(metrics) as f:
        records = [json.loads(line) for line in f]
    step_ms = [r["step_ms"] for r in records if r.get("split") == "train"]
    timed = step_ms[1:] or step_ms  # step 1 warms up
    return statistics.median(timed), min(timed)


TRL_CHILD = r"""
import json, sys, time, statistics, torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
from tokenizers import Tokenizer, models
from trl import DPOConfig, DPOTrainer

model_dir, data, threads, steps, precompute, out, bf16 = sys.argv[1:8]
torch.set_num_threads(int(threads))
rows = [json.loads(line) for line in open(data)]
batch = int(sys.argv[8])
# The rows are already token ids: TRL's text preparation is skipped.
DPOTrainer._prepare_dataset = lambda self, dataset, *args, **kwargs: dataset
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<eos>": 0}, unk_token="<eos>")),
                              eos_token="<eos>", pad_token="<eos>")
# float32 weights on both sides; bf16=True autocasts the forward (policy and reference)
policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
times = []
class StepTimer(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw): self.t = time.perf_counter()
    def on_step_end(self, args, state, control, **kw): times.append(1e3 * (time.perf_counter() - self.t))
args = DPOConfig(output_dir=out, report_to="none", bf16=bf16 == "1", use_cpu=True, max_steps=int(steps),
                 per_device_train_batch_size=batch, learning_rate=1e-6, max_length=None,
                 precompute_ref_log_probs=precompute == "1", logging_steps=1000, save_strategy="no",
                 dataloader_num_workers=0, disable_tqdm=True,
                 # DPOConfig's default is True; `dpo` keeps its activations, so TRL keeps its own
                 gradient_checkpointing=False)
trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                     processing_class=tok, callbacks=[StepTimer()])
# bf16=True is accelerate's autocast on the CPU (checked once: policy and reference layers then
# return bf16); a setting that were silently dropped would time float32 instead
assert trainer.accelerator.mixed_precision == ("bf16" if bf16 == "1" else "no"), trainer.accelerator.mixed_precision
trainer.train()
timed = times[1:] or times  # step 1 warms up
print(json.dumps([statistics.median(timed), min(timed)]))
"""


def time_trl(model_dir, data, threads, steps, precompute, root, bf16=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", TRL_CHILD, model_dir, data, str(threads), str(steps),
                          "1" if precompute else "0", os.path.join(root, "trl-out"), "1" if bf16 else "0",
                          str(PAIRS)],
                         check=True, capture_output=True, text=True, env=env)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def summary(runs):
    """(median over runs of each run's median, fastest step of all runs)"""
    return statistics.median(m for m, _ in runs), min(f for _, f in runs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?", default="target/release/dpo")
    parser.add_argument("--model", choices=["gpt2-random", "smollm2"], default="gpt2-random")
    parser.add_argument("--model-dir", help="smollm2: the float32 directory (default: smollm2_dir.py's)")
    parser.add_argument("--dpo-model", help="what `dpo train` reads as policy and reference (default: the "
                                            "directory TRL reads), e.g. SmolLM2's GGUF file")
    parser.add_argument("--steps", type=int, default=4, help="steps of each run, the first not timed")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=1, help="times the runs alternate (default 1)")
    parser.add_argument("--precompute", choices=["off", "on", "both"],
                        help="which TRL runs: reference log-probs precomputed or not "
                             "(default: both for gpt2-random, off for smollm2)")
    parser.add_argument("--fresh-rows", choices=["on", "off"],
                        help="new rows every step, so that `dpo` runs the reference forward in each step "
                             "(default: off for gpt2-random, on for smollm2)")
    parser.add_argument("--bf16", action="store_true",
                        help="also time `dpo train --precision bf16` (against TRL f32, and bf16 with --trl-bf16)")
    parser.add_argument("--trl-bf16", action="store_true", help="also time TRL with bf16=True (autocast)")
    parser.add_argument("--sides", default="dpo,trl", help="which sides run (default dpo,trl)")
    a = parser.parse_args()
    smollm2 = a.model == "smollm2"
    precompute = a.precompute or ("off" if smollm2 else "both")
    fresh = (a.fresh_rows or ("on" if smollm2 else "off")) == "on"
    sides = a.sides.split(",")
    import torch
    import transformers
    import trl
    with tempfile.TemporaryDirectory() as root:
        model_dir, vocab = make_model(a.model, root, a.model_dir)
        dpo_model = a.dpo_model or model_dir
        data = make_data(root, vocab, PAIRS * a.steps if fresh else PAIRS)
        results = {"cpu": cpu.describe(),
                   "model": ("SmolLM2-135M-Instruct, float32 from the GGUF" if smollm2
                             else "GPT-2 124M shaped, random weights"),
                   "pairs": PAIRS, "tokens": f"{PROMPT_TOKENS}+{RESPONSE_TOKENS}", "steps": a.steps,
                   "rounds": a.rounds, "fresh_rows": fresh, "dpo_model": dpo_model,
                   "reference_forward_in_timed_step": {"dpo": fresh, "trl_precompute_off": True,
                                                       "trl_precompute_on": False},
                   "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                "trl": trl.__version__},
                   "by_threads": {}}
        modes = [m for m in ["off", "on"] if precompute in (m, "both")]
        for threads in [int(t) for t in a.threads.split(",")]:
            t0 = time.time()
            # (median, fastest) of the timed steps of each run, by side; the runs alternate
            runs = {}
            for _ in range(a.rounds):
                trl_runs = [(f"trl{'_bf16' if bf16 else ''}_step_ms_precompute_{mode}", mode, bf16)
                            for bf16 in [False] + ([True] if a.trl_bf16 else []) for mode in modes]
                order = ([("dpo_step_ms", "f32")] if "dpo" in sides else []) \
                    + ([k for k in trl_runs if not k[2]] if "trl" in sides else []) \
                    + ([("dpo_bf16_step_ms", "bf16")] if a.bf16 and "dpo" in sides else []) \
                    + ([k for k in trl_runs if k[2]] if "trl" in sides else [])
                for key, *how in order:
                    if key.startswith("dpo"):
                        r = time_dpo(a.binary, dpo_model, data, threads, a.steps, root, how[0])
                    else:
                        r = time_trl(model_dir, data, threads, a.steps, how[0] == "on", root, how[1])
                    runs.setdefault(key, []).append(r)
            row = results["by_threads"][threads] = {"threads": threads, "model": a.model}
            med = {key: summary(rs)[0] for key, rs in runs.items()}
            for key, rs in runs.items():
                row[key], row[key + "_fastest"] = round(med[key], 1), round(summary(rs)[1], 1)
                if a.rounds > 1:
                    row[key + "_runs"] = [round(m, 1) for m, _ in rs]
            # speed-up of `dpo`: TRL's median step over `dpo`'s, f32 against f32, bf16 against bf16,
            # and (as before) `dpo` bf16 against TRL f32 with precompute on
            for trl_key, dpo_key, name in [(f"trl{p}_step_ms_precompute_{mode}", f"dpo{p}_step_ms",
                                            f"{'bf16_' if p else ''}speedup_vs_trl{p}_precompute_{mode}")
                                           for p in ["", "_bf16"] for mode in modes] \
                    + [("trl_step_ms_precompute_on", "dpo_bf16_step_ms", "bf16_speedup_vs_trl_f32_precompute_on")]:
                if trl_key in med and dpo_key in med:
                    row[name] = round(med[trl_key] / med[dpo_key], 2)
            row["wall_s"] = round(time.time() - t0, 1)
            print(json.dumps(results["by_threads"][threads]), file=sys.stderr)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
