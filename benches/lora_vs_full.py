#!/usr/bin/env python3
"""lora_vs_full.py [DPO_BINARY] [--threads 2] [--steps 3] [--layers 24] [--rounds 1]
               [--sides lora+gc,full+gc,trl+gc (also: full, lora, lora-bf16, trl)]
-- a LoRA DPO step against a full fine-tuning DPO step (`dpo`), and against TRL 1.16 + PEFT, on
a Qwen2.5-0.5B-shaped model: time per step and peak memory.

The model: benches/torch/qwen25_dir.py (random weights, f32, 494.0M params at 24 layers). The
data: 4 x STEPS random `_ids` pairs of 256 prompt + 256 chosen + 256 rejected tokens, one epoch,
4 pairs a step, so every step sees new rows and computes their reference log-probs inside the
step (a first epoch; the reference forward is in the timed step on every side). AdamW, lr 1e-6,
the sigmoid loss (beta 0.1), clipping at 1.

  full       `dpo train --policy M --ref M`: every weight trained; the reference a second model.
  lora       `dpo train --policy M --use-peft --lora-targets all-linear` (r 16, alpha 32,
             dropout 0.05): the base frozen, the reference the base with its adapters off.
  lora-bf16  `lora` with `--base-precision bf16`: the frozen base's matrices stored as bf16 and
             multiplied by the bf16 GEMM; the adapters, their gradients and AdamW in f32.
  SIDE+gc    the same with `--gradient-checkpointing` (each block recomputed in the backward
             pass: one more forward of the blocks, one block's activations in memory).
  trl        TRL 1.16 DPOTrainer(model=M, peft_config=LoraConfig(r=16, lora_alpha=32,
             lora_dropout=0.05, target_modules="all-linear")), float32 (bf16=False), no gradient
             checkpointing, precompute_ref_log_probs off (the reference, adapters disabled, in
             every step); `trl+gc` with gradient_checkpointing=True (TRL's default).

Time: the median `step_ms` (dpo's metrics log; TRL: a callback around each training_step) of
steps 2..STEPS (step 1 first-touches the buffers). Memory: the process's peak RSS (VmHWM of
/proc/PID/status, polled every 0.2 s) at the end of the last training step, before the final
checkpoint is written, and over the whole run; TRL's is ru_maxrss at the end of its last step
(its run saves nothing). With --rounds R the `dpo` runs alternate R times and the medians are
over rounds. Prints the CPU, a table, and one JSON object. Needs benches/requirements.txt + peft
in this Python (peft==0.21.2).

Run:  VENV/bin/python benches/lora_vs_full.py target/release/dpo --threads 2 --steps 3
"""
import argparse
import json
import os
import resource  # noqa: F401  (the TRL child's ru_maxrss)
import statistics
import subprocess
import sys
import tempfile
import time

import cpu

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = 4
GB = 1e9


def poll_peak(proc, metrics, steps):
    """(peak RSS bytes at the end of the last train step, peak RSS bytes of the whole run)."""
    at_steps, peak = None, 0
    status = f"/proc/{proc.pid}/status"
    while proc.poll() is None:
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except FileNotFoundError:
            break
        if at_steps is None and os.path.exists(metrics):
            with open(metrics) as f:
                done = sum('"split":"train"' in line for line in f)
            if done >= steps:
                at_steps = peak
        time.sleep(0.2)
    return at_steps or peak, peak


def run_dpo(binary, kind, model, data, threads, steps, root):
    out = os.path.join(root, f"out-{kind}")
    metrics = os.path.join(root, f"metrics-{kind}.jsonl")
    for path in (metrics,):
        if os.path.exists(path):
            os.remove(path)
    subprocess.run(["rm", "-rf", out], check=True)
    cmd = [binary, "--threads", str(threads), "train", "--policy", model, "--data", data, "--out", out,
           "--steps", str(steps), "--batch-size", str(PAIRS), "--lr", "1e-6", "--max-prompt-length", "256",
           "--metrics", metrics, "--no-progress",
           # the full run's final save (weights and AdamW serialized in memory) peaks near 24 GB,
           # which the memory check refuses on a 24 GB machine; the steps themselves fit
           "--allow-oom-risk"]
    if kind.startswith("full"):
        cmd += ["--ref", model]
    else:
        cmd += ["--use-peft", "--lora-r", "16", "--lora-alpha", "32", "--lora-dropout", "0.05",
                "--lora-targets", "all-linear"]
    if kind.startswith("lora-bf16"):
        cmd += ["--base-precision", "bf16"]
    if kind.endswith("+gc"):
        cmd += ["--gradient-checkpointing"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    at_steps, peak = poll_peak(proc, metrics, steps)
    if proc.wait() != 0:
        raise SystemExit(f"{kind}: dpo failed:\n{proc.stderr.read()[-2000:]}")
    with open(metrics) as f:
        step_ms = [json.loads(line)["step_ms"] for line in f if '"split":"train"' in line]
    return {"step_ms": step_ms, "peak_rss_steps": at_steps, "peak_rss_run": peak}


TRL_CHILD = r"""
import json, resource, sys, time, statistics, torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback
from tokenizers import Tokenizer, models
from trl import DPOConfig, DPOTrainer

model_dir, data, threads, steps, out, pairs, checkpointing = sys.argv[1:8]
torch.set_num_threads(int(threads))
rows = [json.loads(line) for line in open(data)]
DPOTrainer._prepare_dataset = lambda self, dataset, *args, **kwargs: dataset  # rows are ids already
tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<eos>": 0}, unk_token="<eos>")),
                              eos_token="<eos>", pad_token="<eos>")
policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
times, rss = [], []
class StepTimer(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw): self.t = time.perf_counter()
    def on_step_end(self, args, state, control, **kw):
        times.append(1e3 * (time.perf_counter() - self.t))
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
args = DPOConfig(output_dir=out, report_to="none", bf16=False, use_cpu=True, max_steps=int(steps),
                 per_device_train_batch_size=int(pairs), learning_rate=1e-6, max_length=None,
                 precompute_ref_log_probs=False, gradient_checkpointing=checkpointing == "1", logging_steps=1000,
                 save_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                         task_type="CAUSAL_LM")
trainer = DPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                     peft_config=peft_config, callbacks=[StepTimer()])
assert trainer.accelerator.mixed_precision == "no"
trainer.train()
print(json.dumps({"step_ms": times, "peak_rss_steps": rss[-1]}))
"""


def run_trl(model, data, threads, steps, root, checkpointing):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", TRL_CHILD, model, data, str(threads), str(steps),
                          os.path.join(root, "trl-out"), str(PAIRS), "1" if checkpointing else "0"],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"trl failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_rss_run"] = result["peak_rss_steps"]
    return result


def timed(step_ms):
    return step_ms[1:] or step_ms  # step 1 first-touches


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?", default="target/release/dpo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sides", default="lora+gc,full+gc,trl+gc")
    a = parser.parse_args()
    sides = a.sides.split(",")
    print(f"{cpu.describe()}; {a.threads} threads", file=sys.stderr)
    with tempfile.TemporaryDirectory() as root:
        model, data = os.path.join(root, "qwen25"), os.path.join(root, "pairs.jsonl")
        params = int(subprocess.run([sys.executable, os.path.join(HERE, "torch", "qwen25_dir.py"), model, "f32",
                                     str(a.layers), data, str(PAIRS * a.steps)],
                                    check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        runs = {side: [] for side in sides}
        for _ in range(a.rounds):
            for side in sides:
                if side.startswith("trl") and runs[side]:
                    continue  # one TRL run: minutes a step
                result = (run_trl(model, data, a.threads, a.steps, root, side.endswith("+gc"))
                          if side.startswith("trl")
                          else run_dpo(a.binary, side, model, data, a.threads, a.steps, root))
                print(f"{side}: {json.dumps(result)}", file=sys.stderr)
                runs[side].append(result)
    summary = {}
    for side, results in runs.items():
        summary[side] = {
            "step_ms": statistics.median(statistics.median(timed(r["step_ms"])) for r in results),
            "peak_rss_steps_gb": round(max(r["peak_rss_steps"] for r in results) / GB, 2),
            "peak_rss_run_gb": round(max(r["peak_rss_run"] for r in results) / GB, 2),
        }
    print(f"Qwen2.5-0.5B-shaped ({a.layers} layers, {params / 1e6:.1f}M params), 4 pairs of 256+256 tokens a "
          f"step, reference inside the step, {a.threads} threads, median of steps 2..{a.steps}")
    print(f"{'run':14} {'ms/step':>9} {'vs full':>8} {'peak RSS (steps)':>17} {'vs full':>8} {'peak RSS (run)':>15}")
    for side, s in summary.items():
        full = summary.get("full+gc" if side.endswith("+gc") else "full")  # the same checkpointing
        t = f"{s['step_ms'] / full['step_ms']:.2f}x" if full else "-"
        m = f"{s['peak_rss_steps_gb'] / full['peak_rss_steps_gb']:.2f}x" if full else "-"
        print(f"{side:14} {s['step_ms']:9.0f} {t:>8} {s['peak_rss_steps_gb']:14.2f} GB {m:>8} "
              f"{s['peak_rss_run_gb']:12.2f} GB")
    for gc in ("", "+gc"):
        for lora in ("lora", "lora-bf16"):
            if "trl" + gc in summary and lora + gc in summary:
                ratio = summary["trl" + gc]["step_ms"] / summary[lora + gc]["step_ms"]
                print(f"TRL + PEFT / dpo {lora}{gc}, time per step: {ratio:.2f}x")
    print(json.dumps({"bench": "lora_vs_full", "cpu": cpu.info(), "threads": a.threads, "layers": a.layers,
                      "params": params, "steps": a.steps, "rounds": a.rounds, "summary": summary,
                      "runs": runs}))


if __name__ == "__main__":
    main()
