#!/usr/bin/env python3
"""smollm2_dpo_vs_trl.py DPO_BINARY --data TRAIN.jsonl --out DIR [--steps N] [--batch-size B]
                       [--lr LR] [--beta BETA] [--loss sigmoid] [--lora-r R] [--lora-alpha A]
                       [--threads T] [--model-dir HF_DIR] [--sides dpo,trl]
-- the LoRA DPO recipe of docs/smollm2-dpo.md, run by `dpo` and by TRL 1.16 `DPOTrainer` + PEFT
   on the same model, rows, order, hyperparameters and starting adapter, one after the other.

What both sides get:
  - the model: the real SmolLM2-135M-Instruct as a float32 Hugging Face directory
    (benches/torch/smollm2_dir.py writes it from the GGUF of scripts/fetch_smollm2.sh into
    $DPO_CACHE/smollm2-f32; --model-dir another copy);
  - the rows: the first N x B rows of --data (conversational {"prompt","chosen","rejected"}
    messages, rendered by the model's chat template on both sides), taken in the file's order
    (`dpo train --data-order file`; TRL `train_sampling_strategy="sequential"`), no truncation
    (`max_length=None`: SmolLM2's 8192-token context holds every HH-RLHF pair);
  - the step: B pairs, one pair per micro-batch (`--grad-accum B`; TRL
    `per_device_train_batch_size=1, gradient_accumulation_steps=B`), so neither side pads;
    the sigmoid loss (or --loss), beta, AdamW (0.9, 0.999, 1e-8, no weight decay) at a constant
    lr with no warmup, gradient clipping at 1, activations kept (TRL's DPOConfig turns
    gradient checkpointing on by default; it is turned off here, as `dpo` does not recompute);
  - the adapter: LoRA r, alpha on every linear layer but the LM head (`all-linear`), no dropout,
    started from the same tensors: PEFT makes them (torch seed 0: lora_A Kaiming-uniform,
    lora_B zero) and saves them into DIR/init-adapter, which `dpo` reads with --init-adapter;
    TRL gets the model with that adapter and no ref_model, so on both sides the reference is the
    model with its adapter off (the base), computed inside every step.

Writes DIR/dpo.jsonl (the `--metrics` log of `dpo train`) and DIR/trl.jsonl (TRL's log history
in the same form: one JSON line per step with "split": "train" and TRL's metric names, plus
"step_ms", the time of the step measured around `training_step`'s accumulation by a callback),
so that `dpo plot DIR/dpo.jsonl DIR/trl.jsonl --labels dpo,TRL` overlays them. Prints one JSON
object: the CPU, each side's median step time over steps 2..N (step 1 warms up), the whole
run's wall-clock, peak RSS, the ratio TRL / dpo, and the largest difference between the two
sides' per-step loss, reward accuracy and margin.

Run:  VENV/bin/python benches/smollm2_dpo_vs_trl.py target/release/dpo \\
          --data runs/smollm2/train.jsonl --out runs/smollm2/vs-trl --steps 20 --threads 2
Needs the packages of benches/requirements.txt (+ peft) in this Python.
"""
import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu  # noqa: E402

PINNED = {"torch": "2.15.0", "transformers": "5.24.0", "trl": "1.16.0", "peft": "0.21.2"}
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected", "grad_norm")


def default_model_dir():
    cache = os.environ.get("DPO_CACHE", os.path.expanduser("~/.cache/dpo-rs"))
    return os.path.join(cache, "smollm2-f32")


def read_rows(path, n):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if len(rows) < n:
        sys.exit(f"error: {path} has {len(rows)} rows; {n} are needed")
    return rows[:n]


def make_init_adapter(model_dir, out, r, alpha):
    """PEFT's fresh adapter (torch seed 0), saved as the starting point of both sides."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    path = os.path.join(out, "init-adapter")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                            target_modules="all-linear"))
    model.save_pretrained(path)
    return path


def run_dpo(binary, a, data, adapter):
    metrics = os.path.join(a.out, "dpo.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    cmd = [binary, "train", "--policy", a.model_dir, "--init-adapter", adapter, "--use-peft",
           "--data", data, "--data-order", "file", "--out", os.path.join(a.out, "dpo-run"),
           "--overwrite", "--steps", str(a.steps), "--batch-size", str(a.batch_size),
           "--grad-accum", str(a.batch_size), "--lr", str(a.lr), "--beta", str(a.beta),
           "--loss", a.loss, "--metrics", metrics, "--no-progress", "--threads", str(a.threads)]
    print("+ " + " ".join(cmd), file=sys.stderr)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    with open(metrics) as f:
        log = [json.loads(line) for line in f if line.strip()]
    return [r for r in log if r.get("split", "train") == "train"], wall, peak


def run_trl(a, data, adapter):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        saved = json.load(f)
    peft_config = LoraConfig(r=saved["r"], lora_alpha=saved["lora_alpha"], lora_dropout=0.0,
                             target_modules=saved["target_modules"])
    args = DPOConfig(
        output_dir=os.path.join(a.out, "trl-run"), report_to="none", bf16=False, fp16=False,
        use_cpu=True, beta=a.beta, loss_type=a.loss, max_length=None,
        per_device_train_batch_size=1, gradient_accumulation_steps=a.batch_size,
        max_steps=a.steps, learning_rate=a.lr, optim="adamw_torch", weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, warmup_steps=0,
        lr_scheduler_type="constant", max_grad_norm=1.0, disable_dropout=True,
        precompute_ref_log_probs=False, train_sampling_strategy="sequential",
        gradient_checkpointing=False,  # DPOConfig's default is True; `dpo` keeps the activations
        dataloader_drop_last=False, logging_steps=1, save_strategy="no", seed=0, data_seed=0)
    step_ms = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_ms.append(1e3 * (time.perf_counter() - self.t))

    trainer = DPOTrainer(model=model, ref_model=None, args=args,
                         train_dataset=Dataset.from_list(read_rows(data, a.steps * a.batch_size)),
                         processing_class=tok, peft_config=peft_config, callbacks=[StepTimer()])
    # the starting adapter of both sides, into TRL's freshly made "default" adapter
    params = dict(trainer.model.named_parameters())
    with torch.no_grad():
        tensors = load_file(os.path.join(adapter, "adapter_model.safetensors"))
        for key, value in tensors.items():
            name = key.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
            params[name].copy_(value)
    assert len(tensors) == sum(".lora_" in n for n in params), "adapter keys"
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs: keep stdout JSON
        trainer.train()
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    log = []
    for entry in trainer.state.log_history:
        if "loss" in entry and "step" in entry and "train_runtime" not in entry:
            record = {"step": entry["step"], "split": "train", "lr": entry.get("learning_rate")}
            record.update({k: entry[k] for k in METRICS if k in entry})
            record["step_ms"] = step_ms[entry["step"] - 1]
            log.append(record)
    with open(os.path.join(a.out, "trl.jsonl"), "w") as f:
        for record in log:
            f.write(json.dumps(record) + "\n")
    return log, wall, peak


def median_step_ms(log):
    times = [r["step_ms"] for r in log if r["step"] >= 2]
    return statistics.median(times) if times else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("binary", nargs="?", default="target/release/dpo")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--loss", default="sigmoid")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-dir", default=default_model_dir())
    p.add_argument("--sides", default="dpo,trl")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print(cpu.describe(), file=sys.stderr)
    data = os.path.join(a.out, "rows.jsonl")
    with open(data, "w") as f:
        for row in read_rows(a.data, a.steps * a.batch_size):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    adapter = make_init_adapter(a.model_dir, a.out, a.lora_r, a.lora_alpha)
    result = {"cpu": cpu.info(), "steps": a.steps, "pairs_per_step": a.batch_size,
              "threads": a.threads, "lr": a.lr, "beta": a.beta, "loss": a.loss,
              "lora": {"r": a.lora_r, "alpha": a.lora_alpha, "targets": "all-linear"}}
    logs = {}
    sides = a.sides.split(",")
    if "dpo" in sides:
        logs["dpo"], wall, peak = run_dpo(a.binary, a, data, adapter)
        result["dpo"] = {"median_step_ms": median_step_ms(logs["dpo"]), "wall_s": wall,
                         "peak_rss_gib": peak}
    if "trl" in sides:
        logs["trl"], wall, peak = run_trl(a, data, adapter)
        from importlib import metadata
        result["trl"] = {"median_step_ms": median_step_ms(logs["trl"]), "wall_s": wall,
                         "peak_rss_gib": peak,
                         "versions": {k: metadata.version(k) for k in PINNED}}
    if len(logs) == 2:
        result["speedup"] = result["trl"]["median_step_ms"] / result["dpo"]["median_step_ms"]
        for key in ("loss", "rewards/accuracies", "rewards/margins", "grad_norm"):
            result[f"max_abs_diff/{key}"] = max(
                abs(d[key] - t[key]) for d, t in zip(logs["dpo"], logs["trl"]))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
