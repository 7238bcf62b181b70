#!/usr/bin/env bash
# Two builds of `dpo` on the same steps, alternating, to check that a change
# makes no step slower: DPO small and medium (prompt 32/64, responses 96/192,
# 8 pairs, a reference whose log-probs are computed inside the first step
# that uses each row: every step sees new rows), SFT small (16 x 128) and
# GPT-2 (4 x 64), each in f32 and bf16. Prints one JSON line per case: the
# median and fastest steady-state `step_ms` of each build over REPEATS runs
# (the first 2 steps of a run are warm-up and not counted) and new/old.
#
#   benches/builds_compare.sh OLD_DPO NEW_DPO [THREADS="1"] [REPEATS=3] [STEPS=6] [CASES=all]
#
# OLD_DPO, NEW_DPO: two `dpo` binaries, e.g. built by `cargo build --release`
# in a worktree of the base commit and in this one. CASES: any of
# dpo-small dpo-medium sft-small sft-gpt2 (default all four).
set -euo pipefail
OLD=${1:?usage: benches/builds_compare.sh OLD_DPO NEW_DPO [THREADS] [REPEATS] [STEPS] [CASES]}
NEW=${2:?usage: benches/builds_compare.sh OLD_DPO NEW_DPO [THREADS] [REPEATS] [STEPS] [CASES]}
THREADS=${3:-1}
REPEATS=${4:-3}
STEPS=${5:-6}
CASES=${6:-dpo-small dpo-medium sft-small sft-gpt2}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(grep -m1 'cpu family' /proc/cpuinfo | tr -s '\t' ' '); $(grep -m1 '^model\s*:' /proc/cpuinfo | tr -s '\t' ' '); $(grep -m1 'model name' /proc/cpuinfo | tr -s '\t' ' ')"
echo "# old: $OLD   new: $NEW   load: $(cut -d' ' -f1-3 /proc/loadavg)"

# Random token rows of fixed lengths: `_ids` preference rows, or `text_ids` rows.
make_rows() {  # kind path rows vocab lengths...
  python3 - "$@" <<'PY'
import json, random, sys
kind, path, rows, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lengths = [int(x) for x in sys.argv[5:]]
rng = random.Random(0)
ids = lambda n: [rng.randrange(vocab) for _ in range(n)]
with open(path, "w") as f:
    for _ in range(rows):
        if kind == "pairs":
            p, r = lengths
            row = {"prompt_ids": ids(p), "chosen_ids": ids(r), "rejected_ids": ids(r)}
        else:
            row = {"text_ids": ids(lengths[0])}
        f.write(json.dumps(row) + "\n")
PY
}

# Median and fastest step_ms of a metrics log, steps 1-2 left out.
step_ms() {
  python3 - "$1" <<'PY'
import json, statistics, sys
ms = [json.loads(l)["step_ms"] for l in open(sys.argv[1]) if '"train"' in l][2:]
print(statistics.median(ms), min(ms))
PY
}

run_case() {  # name precision threads command...
  local name=$1 precision=$2 t=$3; shift 3
  local old_ms=() new_ms=() old_min=() new_min=()
  for r in $(seq "$REPEATS"); do
    for side in old new; do
      local bin=$OLD; [ "$side" = new ] && bin=$NEW
      rm -rf "$WORK/out" "$WORK/m.jsonl"
      "$bin" "$@" --out "$WORK/out" --steps $((STEPS + 2)) --lr 1e-4 --max-grad-norm 0 \
        --threads "$t" --precision "$precision" --no-progress --metrics "$WORK/m.jsonl" >/dev/null 2>&1
      read -r med fast < <(step_ms "$WORK/m.jsonl")
      if [ "$side" = old ]; then old_ms+=("$med"); old_min+=("$fast"); else new_ms+=("$med"); new_min+=("$fast"); fi
    done
  done
  python3 - "$name" "$precision" "$t" "${old_ms[*]}" "${new_ms[*]}" "${old_min[*]}" "${new_min[*]}" <<'PY'
import json, statistics, sys
name, precision, t = sys.argv[1], sys.argv[2], int(sys.argv[3])
old, new, old_min, new_min = ([float(x) for x in a.split()] for a in sys.argv[4:8])
om, nm = statistics.median(old), statistics.median(new)
print(json.dumps({"case": name, "precision": precision, "threads": t,
                  "old_ms": round(om, 1), "new_ms": round(nm, 1), "new_over_old": round(nm / om, 3),
                  "old_fastest": round(min(old_min), 1), "new_fastest": round(min(new_min), 1),
                  "old_runs": [round(x, 1) for x in old], "new_runs": [round(x, 1) for x in new]}))
PY
}

for case in $CASES; do
  case $case in
    dpo-small|dpo-medium)
      cfg=${case#dpo-}
      if [ "$cfg" = small ]; then P=32; R=96; V=256; else P=64; R=192; V=512; fi
      make_rows pairs "$WORK/$cfg-prefs.jsonl" 184 "$V" "$P" "$R"
      make_rows text "$WORK/$cfg-init.jsonl" 8 "$V" 16
      "$NEW" sft --config "$cfg" --data "$WORK/$cfg-init.jsonl" --out "$WORK/$cfg-init" --steps 1 \
        --batch-size 8 --no-progress >/dev/null 2>&1
      cmd=(train --policy "$WORK/$cfg-init" --ref "$WORK/$cfg-init" --data "$WORK/$cfg-prefs.jsonl" --batch-size 8)
      ;;
    sft-small) make_rows text "$WORK/sft-small.jsonl" 192 256 128
      cmd=(sft --config small --data "$WORK/sft-small.jsonl" --batch-size 16) ;;
    sft-gpt2) make_rows text "$WORK/sft-gpt2.jsonl" 48 50257 64
      cmd=(sft --config gpt2 --data "$WORK/sft-gpt2.jsonl" --batch-size 4) ;;
    *) echo "unknown case $case" >&2; exit 1 ;;
  esac
  for precision in f32 bf16; do
    for t in $THREADS; do
      run_case "$case" "$precision" "$t" "${cmd[@]}"
    done
  done
done
