#!/usr/bin/env bash
# Prefix sharing on against off (docs/dpo.md section 10): `dpo train
# --prefix-sharing on|off` on the same model, data and seed, the two modes
# alternating round by round so that machine noise hits both alike. Prints one
# JSON line per round and one summary line per workload, with the ratio of
# the median steady-state `step_ms` (off / on), the ratio of the fastest
# steps, and the first loss of each mode.
#
#   benches/prefix_sharing.sh PYTHON [ROUNDS=4] [THREADS=2] [WORKLOADS="hh-medium small"]
#
# Workloads:
#   hh-medium  HH-RLHF harmless-base test rows as published (the file named by
#              $HH, default ../shared/datasets/hh-rlhf-harmless-base-test.jsonl.gz),
#              `medium` model (block 256), --max-prompt-length 192, 8 pairs a
#              step, 6 steps, median of steps 3-6;
#   small      the `small` speed bench: 8 pairs of 32 + 96 + 96 random tokens
#              (benches/torch/dpo_step.py --write-inputs), 16 steps, median of steps 3-16.
# Each step includes the reference's forward for its rows (the lazy cache's
# first epoch), in both modes.
#
# PYTHON has torch and safetensors (benches/requirements.txt), which write the
# models and the small workload's rows.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(python3 benches/cpu.py)"
PY=${1:?usage: benches/prefix_sharing.sh PYTHON [ROUNDS] [THREADS] [WORKLOADS]}
ROUNDS=${2:-4}
THREADS=${3:-2}
WORKLOADS=${4:-hh-medium small}
HH=${HH:-../shared/datasets/hh-rlhf-harmless-base-test.jsonl.gz}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet
DPO=target/release/dpo
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
"${TORCH_ENV[@]}" "$PY" benches/torch/dpo_step.py --config medium --write-inputs "$WORK/medium" --rows 64
"${TORCH_ENV[@]}" "$PY" benches/torch/dpo_step.py --config small --write-inputs "$WORK/small" --rows 184

# run WORKLOAD MODE: one `dpo train`; prints "median_step_ms min_step_ms first_loss".
run() {
  local workload=$1 mode=$2 args
  case $workload in
    hh-medium) args=(--policy "$WORK/medium/init" --ref "$WORK/medium/init" --data "$HH" --skip-invalid
                     --max-prompt-length 192 --steps 6) ;;
    small) args=(--policy "$WORK/small/init" --ref "$WORK/small/init" --data "$WORK/small/prefs.jsonl"
                 --max-grad-norm 0 --steps 16) ;;
  esac
  rm -rf "$WORK/out" "$WORK/m.jsonl"
  "$DPO" train "${args[@]}" --batch-size 8 --lr 1e-4 --seed 0 --threads "$THREADS" \
    --prefix-sharing "$mode" --out "$WORK/out" --no-progress --metrics "$WORK/m.jsonl" >/dev/null 2>&1
  python3 - "$WORK/m.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
ms = [r["step_ms"] for r in rows[2:]]
print(statistics.median(ms), min(ms), repr(rows[0]["loss"]))
PY
}

for workload in $WORKLOADS; do
  off_ms=(); on_ms=(); off_min=(); on_min=()
  for round in $(seq "$ROUNDS"); do
    read -r off offm off_loss < <(run "$workload" off)
    read -r on onm on_loss < <(run "$workload" on)
    off_ms+=("$off"); on_ms+=("$on"); off_min+=("$offm"); on_min+=("$onm")
    python3 -c 'import json,sys; w,r,off,on=sys.argv[1:]; print(json.dumps({"workload": w, "round": int(r), "off_ms": round(float(off),1), "on_ms": round(float(on),1), "speedup": round(float(off)/float(on),3)}))' \
      "$workload" "$round" "$off" "$on"
  done
  python3 - "$workload" "$THREADS" "${off_ms[*]}" "${on_ms[*]}" "$off_loss" "$on_loss" "${off_min[*]}" "${on_min[*]}" <<'PY'
import json, statistics, sys
w, t = sys.argv[1], int(sys.argv[2])
off = [float(x) for x in sys.argv[3].split()]
on = [float(x) for x in sys.argv[4].split()]
off_loss, on_loss = float(sys.argv[5]), float(sys.argv[6])
# The fastest step of any round: noise from other jobs only ever slows a step down.
best_off, best_on = min(float(x) for x in sys.argv[7].split()), min(float(x) for x in sys.argv[8].split())
print(json.dumps({"workload": w, "threads": t, "off_ms_median": statistics.median(off),
                  "on_ms_median": statistics.median(on),
                  "speedup": round(statistics.median(off) / statistics.median(on), 3),
                  "speedup_per_round": [round(a / b, 3) for a, b in zip(off, on)],
                  "off_ms_best": best_off, "on_ms_best": best_on, "speedup_best": round(best_off / best_on, 3),
                  "first_loss_off": off_loss, "first_loss_on": on_loss,
                  "first_loss_rel_diff": abs(off_loss - on_loss) / abs(off_loss)}))
PY
done
