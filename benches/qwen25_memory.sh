#!/usr/bin/env bash
# Peak memory of `dpo train` on a Qwen2.5-0.5B-shaped model, against the floor
# that full-parameter DPO with AdamW and a separate reference model cannot go
# under: weights + gradients + AdamW's two moments + the reference's weights,
# 4 bytes x params x 5 (f32).
#
# The model: a Hugging Face directory of transformers' Qwen2ForCausalLM with
# Qwen2.5-0.5B's shape (vocab 151936, hidden 896, 24 layers, 14 heads / 2 kv
# heads of 64, intermediate 4864, tied embeddings, q/k/v biases, rope theta 1e6,
# RMSNorm eps 1e-6: 494.0M params) and random weights (normal, std 0.02; the
# norms 1), saved as WEIGHTS (F32 or BF16 safetensors) into a temporary
# directory; no tokenizer (the rows are ids). The data: 16 random `_ids` pairs
# of 256 prompt + 256 response tokens, and `dpo train --batch-size 8 --steps 2`,
# so each step sees 8 new pairs (512 tokens a pair, 768 a row with prefix
# sharing) and computes their reference log-probs (the reference forward is in
# both steps, as in a first epoch). AdamW, lr 1e-6, PRECISION as given.
#
# Peak RSS: /usr/bin/time -v's "Maximum resident set size" (the kernel's
# high-water mark of the process); without /usr/bin/time, VmHWM of
# /proc/PID/status, read every 0.2 s until the process ends (the same counter).
# Prints the peak next to the floor, the weights file, the step times, and one
# JSON line.
#
#   benches/qwen25_memory.sh PYTHON [WEIGHTS=f32|bf16] [PRECISION=f32|bf16] [THREADS=2]
#
# PYTHON has the packages of benches/requirements.txt (torch, transformers,
# safetensors). Needs about 2 GB of disk for the F32 directory and, going by
# the floor alone, 10 GB of memory. LAYERS=N (default 24) makes a shallower
# model, only to check the script quickly; DPO=PATH runs that binary instead of
# building target/release/dpo; GRAD_ACCUM=N splits each step's 8 pairs into N
# micro-batches (the same step: gradients summed before AdamW). On a 24 GB
# machine (2026-12-06, cpu family 6 model 207) the whole 8 x 512-token batch at
# once is killed for memory after 2.2 minutes (24.4 GB; the saved attention
# probabilities alone are 8 x 14 x 768^2 x 4 B = 264 MB a layer), GRAD_ACCUM=2
# after 4.7 minutes (24.4 GB; which step was not recorded); GRAD_ACCUM=4 runs
# both steps (105 s each, about 17.3 GB) and is then killed while writing the
# final checkpoint, whose weights and AdamW state are serialized in memory
# before they are written.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: benches/qwen25_memory.sh PYTHON [WEIGHTS=f32|bf16] [PRECISION=f32|bf16] [THREADS=2]}
WEIGHTS=${2:-f32}
PRECISION=${3:-f32}
THREADS=${4:-2}
LAYERS=${LAYERS:-24}
GRAD_ACCUM=${GRAD_ACCUM:-1}  # micro-batches a step (the 8 pairs in GRAD_ACCUM parts)
case $WEIGHTS in f32|bf16) ;; *) echo "WEIGHTS must be f32 or bf16, got $WEIGHTS" >&2; exit 1 ;; esac
case $PRECISION in f32|bf16) ;; *) echo "PRECISION must be f32 or bf16, got $PRECISION" >&2; exit 1 ;; esac
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -z "${DPO:-}" ]; then  # DPO=path: that binary, no build
  cargo build --release --quiet ${CARGO_JOBS:+-j "$CARGO_JOBS"}
  DPO=target/release/dpo
fi
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)

# The model directory and the rows; prints the parameter count.
PARAMS=$("${TORCH_ENV[@]}" "$PY" benches/torch/qwen25_dir.py "$WORK/qwen25" "$WEIGHTS" "$LAYERS" "$WORK/pairs.jsonl" 16 \
  | tail -1)

CMD=("$DPO" --threads "$THREADS" train --policy "$WORK/qwen25" --ref "$WORK/qwen25" --data "$WORK/pairs.jsonl"
     --out "$WORK/out" --steps 2 --batch-size 8 --lr 1e-6 --max-prompt-length 256 --precision "$PRECISION"
     --metrics "$WORK/m.jsonl" --no-progress --grad-accum "$GRAD_ACCUM")
if [ -x /usr/bin/time ]; then
  HOW="/usr/bin/time -v"
  /usr/bin/time -v "${CMD[@]}" >"$WORK/stdout" 2>"$WORK/stderr" || {
    tail -20 "$WORK/stderr" >&2
    echo "the steps it finished (metrics log):" >&2
    cat "$WORK/m.jsonl" >&2 2>/dev/null || true
    exit 1
  }
  PEAK_KB=$(grep "Maximum resident set size" "$WORK/stderr" | awk '{print $NF}')
else
  HOW="VmHWM of /proc/PID/status, polled every 0.2 s"
  "${CMD[@]}" >"$WORK/stdout" 2>"$WORK/stderr" &
  PID=$!
  PEAK_KB=0
  while kill -0 "$PID" 2>/dev/null; do
    KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status" 2>/dev/null || true)
    [ -n "$KB" ] && [ "$KB" -gt "$PEAK_KB" ] && PEAK_KB=$KB
    sleep 0.2
  done
  wait "$PID" || { tail -20 "$WORK/stderr" >&2; exit 1; }
fi

"$PY" - "$PEAK_KB" "$PARAMS" "$WEIGHTS" "$PRECISION" "$THREADS" "$LAYERS" "$HOW" "$WORK/m.jsonl" \
  "$(du -sb "$WORK/qwen25/model.safetensors" | cut -f1)" <<'PY'
import json, sys
peak_kb, params, weights, precision, threads, layers, how, metrics, file_bytes = sys.argv[1:10]
peak = int(peak_kb) * 1024
params = int(params)
floor = 4 * params * 5  # f32 weights, gradients, AdamW m and v, the reference's weights
steps = [json.loads(l) for l in open(metrics) if '"train"' in l]
GB = 1e9
print(f"Qwen2.5-0.5B-shaped ({layers} layers), {params / 1e6:.1f}M params, {weights.upper()} weights "
      f"({int(file_bytes) / GB:.2f} GB file); `dpo train --precision {precision} --threads {threads}`, "
      f"8 pairs of 256 + 256 tokens a step, 2 steps")
print(f"peak RSS:  {peak / GB:.2f} GB  ({how})")
print(f"floor:     {floor / GB:.2f} GB  = 4 bytes x {params / 1e6:.1f}M params x 5 "
      f"(weights, grads, AdamW m and v, reference)")
print(f"peak / floor: {peak / floor:.2f}; over the floor: {(peak - floor) / GB:.2f} GB "
      f"(activations, logits, caches, allocator)")
print(f"step times: {', '.join(str(round(s['step_ms'])) + ' ms' for s in steps)}")
print(json.dumps({"bench": "qwen25_memory", "layers": int(layers), "params": params, "weights": weights,
                  "precision": precision, "threads": int(threads), "peak_rss_bytes": peak,
                  "floor_bytes": floor, "peak_over_floor": round(peak / floor, 3),
                  "step_ms": [s["step_ms"] for s in steps], "measured_by": how}))
PY
