#!/usr/bin/env bash
# SFT training step (forward, backward, AdamW): `dpo sft` against
# ../shared/refs/bench_torch_sft.py on the same shapes, alternating the two in
# the same run. Prints one JSON line per (config, threads) with the ratio of
# medians and the FLOP rate of our step.
#
# PRECISION=bf16 runs torch under `--autocast bf16` against ours with
# `--precision bf16` (docs/bf16.md); the default, f32, runs both in f32.
#
#   benches/sft_vs_torch.sh PYTHON [CONFIGS="small gpt2"] [THREADS="1 2"] [REPEATS=2] [PRECISION=f32]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: benches/sft_vs_torch.sh PYTHON [CONFIGS] [THREADS] [REPEATS] [PRECISION]}
CONFIGS=${2:-small gpt2}
THREADS=${3:-1 2}
REPEATS=${4:-2}
PRECISION=${5:-f32}
case $PRECISION in
  f32) TORCH_PRECISION=() ;;
  bf16) TORCH_PRECISION=(--autocast bf16) ;;
  *) echo "PRECISION must be f32 or bf16, got $PRECISION" >&2; exit 1 ;;
esac
REFS=../shared/refs
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet ${CARGO_JOBS:+-j "$CARGO_JOBS"}
DPO=target/release/dpo
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)

for cfg in $CONFIGS; do
  case $cfg in
    small) B=16; T=128; V=256 ;;
    medium) B=8; T=256; V=512 ;;
    gpt2) B=4; T=64; V=50257 ;;
  esac
  # B*12 rows of T random tokens: `{"text_ids": [...]}`, every position scored but the first.
  python3 - "$WORK/$cfg.jsonl" "$B" "$T" "$V" <<'PY'
import json, random, sys
path, B, T, V = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(0)
with open(path, "w") as f:
    for _ in range(B * 12):
        f.write(json.dumps({"text_ids": [rng.randrange(V) for _ in range(T)]}) + "\n")
PY
  for t in $THREADS; do
    torch_ms=(); ours_ms=()
    for r in $(seq "$REPEATS"); do
      line=$("${TORCH_ENV[@]}" "$PY" "$REFS/bench_torch_sft.py" --config "$cfg" --threads "$t" --steps 6 --warmup 2 "${TORCH_PRECISION[@]}")
      torch_ms+=("$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ms_per_step_median"])')")
      "$DPO" sft --config "$cfg" --data "$WORK/$cfg.jsonl" --out "$WORK/out" --steps 8 --batch-size "$B" \
        --lr 1e-4 --max-grad-norm 0 --threads "$t" --precision "$PRECISION" --no-progress --metrics "$WORK/m.jsonl" >/dev/null 2>&1
      ours_ms+=("$(python3 - "$WORK/m.jsonl" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
print(statistics.median(r["step_ms"] for r in rows[2:]))
PY
)")
      rm -rf "$WORK/m.jsonl" "$WORK/out"
    done
    python3 - "$cfg" "$t" "$B" "$T" "${torch_ms[*]}" "${ours_ms[*]}" "$PRECISION" <<'PY'
import sys, statistics, json
cfg, t, B, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch_ms = [float(x) for x in sys.argv[5].split()]
ours_ms = [float(x) for x in sys.argv[6].split()]
precision = sys.argv[7]
shapes = {"small": (256, 128, 4, 128), "medium": (512, 256, 6, 256), "gpt2": (50257, 1024, 12, 768)}
V, block, L, C = shapes[cfg]
params = V * C + block * C + L * (12 * C * C + 13 * C) + 2 * C
tokens = B * T
# 6 x params x tokens for the weights (the tied LM head counted once), plus attention:
# QK^T and att@V, forward 2*2*T*T*C per layer and sequence, backward twice that.
flops = 6 * params * tokens + 3 * L * B * 4 * T * T * C
tm, om = statistics.median(torch_ms), statistics.median(ours_ms)
print(json.dumps({"config": cfg, "precision": precision, "threads": t, "batch": B, "seq": T, "torch_ms_per_step": tm,
                  "dpo_ms_per_step": om, "speedup": round(tm / om, 2),
                  "dpo_gflops": round(flops / (om / 1e3) / 1e9, 1), "gflop_per_step": round(flops / 1e9, 2),
                  "torch_runs": torch_ms, "dpo_runs": ours_ms}))
PY
  done
done
