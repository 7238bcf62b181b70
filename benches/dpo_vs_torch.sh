#!/usr/bin/env bash
# DPO training step: `dpo train` against ../shared/refs/bench_torch_dpo.py on the
# same work (same model, same batch shapes), in the same run, alternating the
# two so that machine noise hits both alike. Prints one line per measurement
# and the ratio of medians.
#
#   benches/dpo_vs_torch.sh PYTHON [CONFIGS="small medium"] [THREADS="1 2"] [REPEATS=3]
#
# PYTHON is an interpreter with torch, numpy and safetensors
# (python3 -m venv VENV && VENV/bin/pip install torch numpy safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: benches/dpo_vs_torch.sh PYTHON [CONFIGS] [THREADS] [REPEATS]}
CONFIGS=${2:-small medium}
THREADS=${3:-1 2}
REPEATS=${4:-3}
REFS=../shared/refs
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet
DPO=target/release/dpo
# OpenBLAS overrides slow a current numpy/torch down (see the env notes); unset for the baseline only.
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)

for cfg in $CONFIGS; do
  "${TORCH_ENV[@]}" "$PY" "$REFS/make_bench_inputs.py" --config "$cfg" --rows 184 "$WORK/$cfg" >/dev/null
  for t in $THREADS; do
    torch_ms=(); ours_ms=()
    for r in $(seq "$REPEATS"); do
      line=$("${TORCH_ENV[@]}" "$PY" "$REFS/bench_torch_dpo.py" --config "$cfg" --threads "$t" --steps 10 --warmup 2)
      torch_ms+=("$(echo "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ms_per_step_median"])')")
      # 12 steps; the first two are warm-up (allocator, caches), as in the torch script.
      out=$("$DPO" train --policy "$WORK/$cfg/init" --ref "$WORK/$cfg/init" --data "$WORK/$cfg/prefs.jsonl" \
            --out "$WORK/out" --steps 12 --batch-size 8 --lr 1e-4 --max-grad-norm 0 --threads "$t" \
            --no-progress --metrics "$WORK/m.jsonl" 2>/dev/null)
      ours_ms+=("$(python3 - "$WORK/m.jsonl" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
ms = [r["step_ms"] for r in rows[2:]]
print(statistics.median(ms))
PY
)")
      rm -f "$WORK/m.jsonl"
    done
    python3 - "$cfg" "$t" "${torch_ms[*]}" "${ours_ms[*]}" <<'PY'
import sys, statistics, json
cfg, t, torch_ms, ours_ms = sys.argv[1], int(sys.argv[2]), [float(x) for x in sys.argv[3].split()], [float(x) for x in sys.argv[4].split()]
tm, om = statistics.median(torch_ms), statistics.median(ours_ms)
print(json.dumps({"config": cfg, "threads": t, "torch_ms_per_step": tm, "dpo_ms_per_step": om,
                  "speedup": round(tm / om, 2), "torch_runs": torch_ms, "dpo_runs": ours_ms}))
PY
  done
done
