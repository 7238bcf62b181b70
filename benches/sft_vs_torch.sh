#!/usr/bin/env bash
# SFT training step: `dpo sft` against the PyTorch eager baseline
# benches/torch/sft_step.py on the same shapes (B sequences of T random tokens:
# small 16 x 128, gpt2 4 x 64, smollm2 4 x 256), alternating the two in the same
# run. Timed on both sides: forward, mean cross-entropy over every position,
# backward, AdamW (lr 1e-4, no clipping); not timed: the first 2 steps of each run.
#
# smollm2 is the real SmolLM2-135M-Instruct (Llama, 134.5M params), the float32
# directory of benches/torch/smollm2_dir.py (written once into
# $DPO_CACHE/smollm2-f32 from scripts/fetch_smollm2.sh's GGUF): `dpo sft --init
# DIR` against transformers' LlamaForCausalLM from the same directory; the other
# configs are fresh models (`dpo sft --config`, benches/torch/gpt.py).
#
# Prints one JSON line per (config, threads): the median over REPEATS runs of
# each side's median step, their ratio (torch / dpo), and the FLOP rate of our
# step (6 x params x tokens, the tied LM head counted once, plus attention);
# and each side's fastest step of all runs (other jobs on the machine only
# ever slow a step down, so on a busy machine the fastest steps compare better).
#
# PRECISION=bf16 runs torch under `--autocast bf16` against ours with
# `--precision bf16` (docs/bf16.md); the default, f32, runs both in f32.
#
#   benches/sft_vs_torch.sh PYTHON [CONFIGS="small gpt2"] [THREADS="1 2"] [REPEATS=2] [PRECISION=f32] [STEPS=6]
#   benches/sft_vs_torch.sh PYTHON smollm2 "1 2" 2 bf16 4     # the SmolLM2 bf16 row
#
# PYTHON has the packages of benches/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(python3 benches/cpu.py)"
PY=${1:?usage: benches/sft_vs_torch.sh PYTHON [CONFIGS] [THREADS] [REPEATS] [PRECISION] [STEPS]}
CONFIGS=${2:-small gpt2}
THREADS=${3:-1 2}
REPEATS=${4:-2}
PRECISION=${5:-f32}
STEPS=${6:-6}
case $PRECISION in
  f32) TORCH_PRECISION=() ;;
  bf16) TORCH_PRECISION=(--autocast bf16) ;;
  *) echo "PRECISION must be f32 or bf16, got $PRECISION" >&2; exit 1 ;;
esac
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet ${CARGO_JOBS:+-j "$CARGO_JOBS"}
DPO=target/release/dpo
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)

for cfg in $CONFIGS; do
  # The shapes of benches/torch/sft_step.py's SHAPES and gpt.PRESETS.
  case $cfg in
    small) B=16; T=128; V=256 ;;
    medium) B=8; T=256; V=512 ;;
    gpt2) B=4; T=64; V=50257 ;;
    smollm2) B=4; T=256; V=49152 ;;
    *) echo "unknown config $cfg" >&2; exit 1 ;;
  esac
  MODEL=(--config "$cfg"); DIR=
  if [ "$cfg" = smollm2 ]; then
    DIR=$("${TORCH_ENV[@]}" "$PY" benches/torch/smollm2_dir.py | tail -1)
    MODEL=(--init "$DIR")
  fi
  # B*12 rows of T random tokens: `{"text_ids": [...]}`, every position scored but the first
  # (T - 1 scored tokens a row; torch scores T, from T + 1 tokens: under 2% more work for torch).
  python3 - "$WORK/$cfg.jsonl" "$B" "$T" "$V" <<'PY'
import json, random, sys
path, B, T, V = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(0)
with open(path, "w") as f:
    for _ in range(B * 12):
        f.write(json.dumps({"text_ids": [rng.randrange(V) for _ in range(T)]}) + "\n")
PY
  for t in $THREADS; do
    torch_ms=(); ours_ms=(); torch_min=(); ours_min=()
    for r in $(seq "$REPEATS"); do
      line=$("${TORCH_ENV[@]}" "$PY" benches/torch/sft_step.py --config "$cfg" --threads "$t" --steps "$STEPS" --warmup 2 "${TORCH_PRECISION[@]}" ${DIR:+--model-dir "$DIR"} | tail -1)
      read -r med fast < <(echo "$line" | python3 -c 'import json,sys; r = json.load(sys.stdin); print(r["ms_median"], r["ms_min"])')
      torch_ms+=("$med"); torch_min+=("$fast")
      "$DPO" sft "${MODEL[@]}" --data "$WORK/$cfg.jsonl" --out "$WORK/out" --steps $((STEPS + 2)) --batch-size "$B" \
        --lr 1e-4 --max-grad-norm 0 --threads "$t" --precision "$PRECISION" --no-progress --metrics "$WORK/m.jsonl" >/dev/null 2>&1
      read -r med fast < <(python3 - "$WORK/m.jsonl" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
ms = [r["step_ms"] for r in rows[2:]]  # steps 1-2 warm up, as on the torch side
print(statistics.median(ms), min(ms))
PY
)
      ours_ms+=("$med"); ours_min+=("$fast")
      rm -rf "$WORK/m.jsonl" "$WORK/out"
    done
    python3 - "$cfg" "$t" "$B" "$T" "${torch_ms[*]}" "${ours_ms[*]}" "$PRECISION" "${torch_min[*]}" "${ours_min[*]}" <<'PY'
import sys, statistics, json
cfg, t, B, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch_ms, ours_ms = [float(x) for x in sys.argv[5].split()], [float(x) for x in sys.argv[6].split()]
precision = sys.argv[7]
torch_min, ours_min = [float(x) for x in sys.argv[8].split()], [float(x) for x in sys.argv[9].split()]
shapes = {"small": (256, 128, 4, 128), "medium": (512, 256, 6, 256), "gpt2": (50257, 1024, 12, 768),
          "smollm2": (49152, 8192, 30, 576)}
V, block, L, C = shapes[cfg]
if cfg == "smollm2":
    # Llama: q, o (C x C), k, v (C x 3 kv heads x 64), gate, up, down (C x 1536), 2 RMSNorms a layer,
    # a final one; no position table; the tied embedding (LM head) once: 134,515,008
    params = V * C + L * (2 * C * C + 2 * C * 192 + 3 * C * 1536 + 2 * C) + C
else:
    params = V * C + block * C + L * (12 * C * C + 13 * C) + 2 * C
tokens = B * T
# 6 x params x tokens for the weights (the tied LM head counted once), plus attention:
# QK^T and att@V, forward 2*2*T*T*C per layer and sequence, backward twice that.
flops = 6 * params * tokens + 3 * L * B * 4 * T * T * C
tm, om = statistics.median(torch_ms), statistics.median(ours_ms)
print(json.dumps({"bench": "sft", "config": cfg, "precision": precision, "threads": t, "batch": B, "seq": T, "torch_ms_per_step": tm,
                  "dpo_ms_per_step": round(om, 2), "speedup": round(tm / om, 2),
                  "torch_ms_fastest": min(torch_min), "dpo_ms_fastest": round(min(ours_min), 2),
                  "dpo_gflops": round(flops / (om / 1e3) / 1e9, 1), "gflop_per_step": round(flops / 1e9, 2),
                  "torch_runs": torch_ms, "dpo_runs": [round(x, 2) for x in ours_ms]}))
PY
  done
done
