#!/usr/bin/env bash
# Data-parallel speed: `mpirun -n RANKS dpo train` at THREADS threads a rank
# against the single process at THREADS threads, on the same `small` DPO run
# (8 pairs of 32+96 tokens a step, the README's speed case), alternating the
# two so that machine noise hits both alike. Steady state: the median step
# time of steps 3 to 22 (rank 0's step_ms, which includes the reductions).
#
#   benches/mpi_scaling.sh [RANKS=2] [THREADS=1] [REPEATS=3]
#
# Needs Open MPI (openmpi-bin libopenmpi-dev libclang-dev); builds with --features mpi.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(python3 benches/cpu.py)"
RANKS=${1:-2}
THREADS=${2:-1}
REPEATS=${3:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet --features mpi
DPO=$PWD/target/release/dpo

# 184 pairs of random byte ids: a 32-token prompt, two 96-token responses.
python3 - "$WORK/prefs.jsonl" <<'PY'
import json, random, sys
rng = random.Random(0)
ids = lambda n: [rng.randrange(256) for _ in range(n)]
with open(sys.argv[1], "w") as f:
    for _ in range(184):
        f.write(json.dumps({"prompt_ids": ids(32), "chosen_ids": ids(96), "rejected_ids": ids(96)}) + "\n")
PY
# A fresh `small` model (one SFT step at lr 0 writes the initialisation).
"$DPO" sft --config small --data "$WORK/prefs.jsonl" --out "$WORK/init" --steps 1 --lr 0 \
  --no-progress >/dev/null 2>&1

median_ms() {  # metrics file -> median step_ms of the steps after the first two
  python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
print(statistics.median(r["step_ms"] for r in rows[2:]))
PY
}

run() {  # ranks (0: the plain binary) -> median ms per step
  local launch=()
  [ "$1" -gt 0 ] && launch=(mpirun --allow-run-as-root --oversubscribe --bind-to none -n "$1")
  rm -rf "$WORK/out" "$WORK/m.jsonl"
  "${launch[@]}" "$DPO" train --policy "$WORK/init" --ref "$WORK/init" --data "$WORK/prefs.jsonl" \
    --out "$WORK/out" --steps 22 --batch-size 8 --lr 1e-4 --max-grad-norm 0 --threads "$THREADS" \
    --no-progress --metrics "$WORK/m.jsonl" >/dev/null 2>&1
  median_ms "$WORK/m.jsonl"
}

single=(); multi=()
for _ in $(seq "$REPEATS"); do
  single+=("$(run 0)")
  multi+=("$(run "$RANKS")")
done
python3 - "$RANKS" "$THREADS" "${single[*]}" "${multi[*]}" <<'PY'
import json, statistics, sys
ranks, threads = int(sys.argv[1]), int(sys.argv[2])
single, multi = [float(x) for x in sys.argv[3].split()], [float(x) for x in sys.argv[4].split()]
s, m = statistics.median(single), statistics.median(multi)
print(json.dumps({"ranks": ranks, "threads_per_rank": threads,
                  "single_ms_per_step": s, "mpi_ms_per_step": m,
                  "single_steps_per_s": round(1000 / s, 2), "mpi_steps_per_s": round(1000 / m, 2),
                  "speedup": round(s / m, 2), "single_runs": single, "mpi_runs": multi}))
PY
