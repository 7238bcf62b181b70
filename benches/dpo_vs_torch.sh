#!/usr/bin/env bash
# DPO training step: `dpo train` against the PyTorch eager baseline
# benches/torch/dpo_step.py on the same work (the same nanoGPT-initialised
# model, 8 pairs of random tokens a step: small 32 + 96, medium 64 + 192), in
# the same run, alternating the two so that machine noise hits both alike.
#
# Timed on both sides: policy forward and backward on chosen and rejected,
# the reference's forward (inside the step: torch runs it under no_grad in
# every step; `dpo` computes a batch's reference log-probs in the step that
# first sees it, and every step here sees new rows), the sigmoid loss, AdamW
# (lr 1e-4, no clipping). Not timed: the first 2 steps of each run (allocator,
# first touch). `dpo` runs with its defaults otherwise: prefix sharing on (the
# prompt is run once for both responses), the fused log-prob kernels.
#
# Prints one JSON line per (config, threads): the median over REPEATS runs of
# each side's median step, and their ratio (torch / dpo); and each side's
# fastest step of all runs (other jobs on the machine only ever slow a step
# down, so on a busy machine the fastest steps compare better).
#
#   benches/dpo_vs_torch.sh PYTHON [CONFIGS="small medium"] [THREADS="1 2"] [REPEATS=3] [STEPS=8]
#
# PYTHON has the packages of benches/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(python3 benches/cpu.py)"
PY=${1:?usage: benches/dpo_vs_torch.sh PYTHON [CONFIGS] [THREADS] [REPEATS] [STEPS]}
CONFIGS=${2:-small medium}
THREADS=${3:-1 2}
REPEATS=${4:-3}
STEPS=${5:-8}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet
DPO=target/release/dpo
# OpenBLAS overrides slow a current numpy/torch down (see the env notes); unset for the baseline only.
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)

for cfg in $CONFIGS; do
  # 184 rows: more than (STEPS + 2) * 8 for any STEPS up to 21, so every step sees new rows.
  "${TORCH_ENV[@]}" "$PY" benches/torch/dpo_step.py --config "$cfg" --write-inputs "$WORK/$cfg" --rows 184
  for t in $THREADS; do
    torch_ms=(); ours_ms=(); torch_min=(); ours_min=()
    for r in $(seq "$REPEATS"); do
      line=$("${TORCH_ENV[@]}" "$PY" benches/torch/dpo_step.py --config "$cfg" --threads "$t" --steps "$STEPS" --warmup 2)
      read -r med fast < <(echo "$line" | python3 -c 'import json,sys; r = json.load(sys.stdin); print(r["ms_median"], r["ms_min"])')
      torch_ms+=("$med"); torch_min+=("$fast")
      rm -rf "$WORK/out" "$WORK/m.jsonl"
      "$DPO" train --policy "$WORK/$cfg/init" --ref "$WORK/$cfg/init" --data "$WORK/$cfg/prefs.jsonl" \
        --out "$WORK/out" --steps $((STEPS + 2)) --batch-size 8 --lr 1e-4 --max-grad-norm 0 --threads "$t" \
        --no-progress --metrics "$WORK/m.jsonl" >/dev/null 2>&1
      read -r med fast < <(python3 - "$WORK/m.jsonl" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
ms = [r["step_ms"] for r in rows[2:]]  # steps 1-2 warm up, as on the torch side
print(statistics.median(ms), min(ms))
PY
)
      ours_ms+=("$med"); ours_min+=("$fast")
    done
    python3 - "$cfg" "$t" "$STEPS" "${torch_ms[*]}" "${ours_ms[*]}" "${torch_min[*]}" "${ours_min[*]}" <<'PY'
import sys, statistics, json
cfg, t, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch_ms, ours_ms, torch_min, ours_min = ([float(x) for x in a.split()] for a in sys.argv[4:8])
tm, om = statistics.median(torch_ms), statistics.median(ours_ms)
print(json.dumps({"bench": "dpo", "config": cfg, "threads": t, "timed_steps": steps,
                  "torch_ms_per_step": tm, "dpo_ms_per_step": round(om, 2), "speedup": round(tm / om, 2),
                  "torch_ms_fastest": min(torch_min), "dpo_ms_fastest": round(min(ours_min), 2),
                  "torch_runs": torch_ms, "dpo_runs": [round(x, 2) for x in ours_ms]}))
PY
  done
done
