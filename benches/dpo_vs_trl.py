#!/usr/bin/env python3
"""dpo_vs_trl_gpt2.py DPO_BINARY [--steps N] [--threads 1,2] [--bf16] [--precompute off|on|both]
-- one DPO step on a GPT-2 124M, `dpo` vs TRL.

The model is a transformers `GPT2LMHeadModel` of the default `GPT2Config` (GPT-2 124M: 12 layers,
768 wide, 50257 ids, 1024 positions) with random weights, saved with `save_pretrained` into a
temporary directory: `dpo` reads that directory as it is (docs/spec.md section 2.1), and the same
directory is TRL's policy and reference. The batch is 4 pairs of 128 prompt + 128 response tokens
(random ids, `_ids` rows, so no tokenizer is involved), AdamW, lr 1e-6, no truncation.

  - `dpo train --policy DIR --ref DIR`: the reference log-probs of a batch are computed the first
    time the batch is seen and cached (docs/dpo.md section 10); the step time is `step_ms` of its
    metrics log. With `--bf16`, `dpo train --precision bf16` is timed too (docs/bf16.md).
  - TRL 1.16 `DPOTrainer` on CPU, float32 (`bf16=False`), the same batch, with
    `precompute_ref_log_probs` off (the reference runs in every step) and on (once, before
    training); the step time is measured around each `training_step` by a callback.

The reference model's forward: `dpo` runs it in step 1 (the batch's first sight), which is not
timed, and every later step reuses the cache, since the 4 rows are the one batch of every step;
TRL with precompute on runs it before training. So with precompute on, neither side's timed step
holds a reference forward: that is the like-for-like comparison (benches/speed_table.sh uses it).
With precompute off, TRL's steps hold one and `dpo`'s do not.

For each thread count (torch.set_num_threads / `dpo --threads`), the median step time of steps
2..N (step 1 warms up) is reported, with TRL's step time over `dpo`'s (the speed-up of `dpo`).
Prints one JSON object. Needs the packages of benches/requirements.txt in this Python.

Run:  VENV/bin/python benches/dpo_vs_trl_gpt2.py target/release/dpo --steps 4 --bf16

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

PROMPT_TOKENS, RESPONSE_TOKENS, PAIRS = 128, 128, 4


def make_fixture(root):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model_dir = os.path.join(root, "gpt2-random")
    GPT2LMHeadModel(GPT2Config()).save_pretrained(model_dir)
    rng = random.Random(0)
    ids = lambda n: [rng.randrange(50257) for _ in range(n)]  # noqa: E731
    rows = [{"prompt_ids": ids(PROMPT_TOKENS), "chosen_ids": ids(RESPONSE_TOKENS),
             "rejected_ids": ids(RESPONSE_TOKENS)} for _ in range(PAIRS)]
    data = os.path.join(root, "pairs.jsonl")
    with open(data, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return model_dir, data, rows


def time_dpo(binary, model_dir, data, threads, steps, root, precision="f32"):
    out = os.path.join(root, f"dpo-out-{threads}-{precision}")
    metrics = os.path.join(root, f"dpo-metrics-{threads}-{precision}.jsonl")
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
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerCallback
from tokenizers import Tokenizer, models
from trl import DPOConfig, DPOTrainer

model_dir, data, threads, steps, precompute, out = sys.argv[1:7]
torch.set_num_threads(int(threads))
rows = [json.loads(line) for line in open(data)]
# The rows are already token ids: TRL's text preparation is skipped.
DPOTrainer._prepare_dataset = lambda self, dataset, *args, **kwargs: dataset
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<eos>": 0}, unk_token="<eos>")),
                              eos_token="<eos>", pad_token="<eos>")
policy = GPT2LMHeadModel.from_pretrained(model_dir)
ref = GPT2LMHeadModel.from_pretrained(model_dir)
times = []
class StepTimer(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw): self.t = time.perf_counter()
    def on_step_end(self, args, state, control, **kw): times.append(1e3 * (time.perf_counter() - self.t))
args = DPOConfig(output_dir=out, report_to="none", bf16=False, use_cpu=True, max_steps=int(steps),
                 per_device_train_batch_size=len(rows), learning_rate=1e-6, max_length=None,
                 precompute_ref_log_probs=precompute == "1", logging_steps=1000, save_strategy="no",
                 dataloader_num_workers=0, disable_tqdm=True)
trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                     processing_class=tok, callbacks=[StepTimer()])
trainer.train()
timed = times[1:] or times  # step 1 warms up
print(json.dumps([statistics.median(timed), min(timed)]))
"""


def time_trl(model_dir, data, threads, steps, precompute, root):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", TRL_CHILD, model_dir, data, str(threads), str(steps),
                          "1" if precompute else "0", os.path.join(root, "trl-out")],
                         check=True, capture_output=True, text=True, env=env)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--precompute", choices=["off", "on", "both"], default="both",
                        help="which TRL runs: reference log-probs precomputed or not (default both)")
    parser.add_argument("--bf16", action="store_true",
                        help="also time `dpo train --precision bf16` (reported apart: TRL stays f32)")
    a = parser.parse_args()
    import torch
    import transformers
    import trl
    with tempfile.TemporaryDirectory() as root:
        model_dir, data, _ = make_fixture(root)
        results = {"model": "GPT-2 124M shaped, random weights", "pairs": PAIRS,
                   "tokens": f"{PROMPT_TOKENS}+{RESPONSE_TOKENS}", "steps": a.steps,
                   "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                "trl": trl.__version__},
                   "by_threads": {}}
        for threads in [int(t) for t in a.threads.split(",")]:
            t0 = time.time()
            # (median, fastest) of the timed steps; the fastest compare better on a busy machine
            dpo_ms, dpo_fast = time_dpo(a.binary, model_dir, data, threads, a.steps, root)
            row = results["by_threads"][threads] = {"threads": threads, "dpo_step_ms": round(dpo_ms, 1),
                                                    "dpo_step_ms_fastest": round(dpo_fast, 1)}
            trl_on = None
            for mode in ["off", "on"]:
                if a.precompute in (mode, "both"):
                    trl_ms, trl_fast = time_trl(model_dir, data, threads, a.steps, mode == "on", root)
                    row[f"trl_step_ms_precompute_{mode}"] = round(trl_ms, 1)
                    row[f"trl_step_ms_precompute_{mode}_fastest"] = round(trl_fast, 1)
                    row[f"speedup_vs_trl_precompute_{mode}"] = round(trl_ms / dpo_ms, 2)
                    trl_on = trl_ms if mode == "on" else trl_on
            if a.bf16:
                bf16_ms, bf16_fast = time_dpo(a.binary, model_dir, data, threads, a.steps, root, "bf16")
                row["dpo_bf16_step_ms"] = round(bf16_ms, 1)
                row["dpo_bf16_step_ms_fastest"] = round(bf16_fast, 1)
                if trl_on is not None:
                    row["bf16_speedup_vs_trl_f32_precompute_on"] = round(trl_on / bf16_ms, 2)
            row["wall_s"] = round(time.time() - t0, 1)
            print(json.dumps(results["by_threads"][threads]), file=sys.stderr)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
